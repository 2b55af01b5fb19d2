// {{name}}: a Stagecraft deploy phase written in JavaScript.
//
// Built with componentize-js into a WebAssembly component (see README.md). `run` gets the
// phase's context (release, config, vars, earlier phases' outputs) and returns a report;
// throwing an Error fails the phase with its message. `run` may be async: the host waits for
// its promise (here, for `fetch`).

import { log } from 'stagecraft:phase/host@0.1.1';

export const phase = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description:
        'Greets config.target, after checking config.check_url if set; nothing to do on a rollback.',
      phases: [],
    };
  },

  async run(ctx) {
    const config = new Map(ctx.config);
    const target = (config.get('target') ?? '').trim();
    if (!target) {
      throw new Error(
        'config.target is missing: set it in this phase\'s config, e.g. config = { target = "world" }',
      );
    }
    if (ctx.operation === 'rollback') {
      return {
        outcome: { tag: 'skipped', val: 'nothing to undo on a rollback' },
        summary: `skipped for rollback to ${ctx.release.version}`,
        outputs: [],
      };
    }
    const checkUrl = (config.get('check_url') ?? '').trim();
    if (checkUrl) {
      // The host sends it only if the URL's origin is in the phase's net grant, e.g.
      // net = ["https://status.example.com"]; otherwise fetch fails and the host adds what to grant.
      let response;
      try {
        response = await fetch(checkUrl);
      } catch (e) {
        throw new Error(`check_url ${checkUrl}: ${e.message}`);
      }
      if (!response.ok) {
        const error = new Error(`check_url ${checkUrl} answered ${response.status}`);
        error.details = (await response.text()).slice(-2000);
        throw error;
      }
      log('info', `${checkUrl} answered ${response.status}`);
    }
    const greeting = `hello, ${target}`;
    log('info', `${greeting} (phase ${ctx.phase}, ${ctx.release.version})`);
    return {
      outcome: { tag: 'completed' },
      summary: `greeted ${target} for ${ctx.release.version}`,
      outputs: [
        ['greeting', greeting],
        ['version', ctx.release.version],
      ],
    };
  },
};
