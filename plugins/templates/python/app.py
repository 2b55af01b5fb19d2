"""{{name}}: a Stagecraft deploy phase written in Python.

Built with componentize-py into a WebAssembly component (see README.md). `run` gets the phase's
context (release, config, vars, earlier phases' outputs) and returns a report; raising
`Err(PhaseError(...))` fails the phase with that message.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, stagecraft_phase_types as types

import stagecraft_http


def fail(message: str, details: str | None = None):
    raise Err(types.PhaseError(message=message, details=details))


class Phase(exports.Phase):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            description="Greets config.target, after checking config.check_url if set; "
            "nothing to do on a rollback.",
            phases=[],
        )

    def run(self, ctx: types.PhaseContext) -> types.PhaseReport:
        config = dict(ctx.config)
        target = config.get("target", "").strip()
        if not target:
            fail(
                "config.target is missing: set it in this phase's config, "
                'e.g. config = { target = "world" }'
            )
        if ctx.operation == types.Operation.ROLLBACK:
            return types.PhaseReport(
                outcome=types.Outcome_Skipped("nothing to undo on a rollback"),
                summary=f"skipped for rollback to {ctx.release.version}",
                outputs=[],
            )
        check_url = config.get("check_url", "").strip()
        if check_url:
            # The host sends it only if the URL's origin is in the phase's net grant, e.g.
            # net = ["https://status.example.com"]; otherwise HttpError says what to add.
            try:
                response = stagecraft_http.get(check_url, timeout=10)
            except stagecraft_http.HttpError as e:
                fail(f"check_url {e}")
            if not response.is_success():
                fail(f"check_url {check_url} answered {response.status}", response.text()[-2000:])
            host.log(host.LogLevel.INFO, f"{check_url} answered {response.status}")
        greeting = f"hello, {target}"
        host.log(host.LogLevel.INFO, f"{greeting} (phase {ctx.phase}, {ctx.release.version})")
        return types.PhaseReport(
            outcome=types.Outcome_Completed(),
            summary=f"greeted {target} for {ctx.release.version}",
            outputs=[("greeting", greeting), ("version", ctx.release.version)],
        )
