// {{name}}: a Stagecraft deploy phase written in JavaScript.
//
// Built with componentize-js into a WebAssembly component (see README.md). `run` gets the
// phase's context (release, config, vars, earlier phases' outputs) and returns a report;
// throwing an Error fails the phase with its message.

import { log } from 'stagecraft:phase/host@0.1.0';

export const phase = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'Greets config.target; nothing to do on a rollback.',
      phases: [],
    };
  },

  run(ctx) {
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
