"""{{name}}: a Stagecraft deploy phase written in Python.

Built with componentize-py into a WebAssembly component (see README.md). `run` gets the phase's
context (release, config, vars, earlier phases' outputs) and returns a report; raising
`Err(PhaseError(...))` fails the phase with that message.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types


class Phase(exports.Phase):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            description="Greets config.target; nothing to do on a rollback.",
            phases=[],
        )

    def run(self, ctx: types.PhaseContext) -> types.PhaseReport:
        config = dict(ctx.config)
        target = config.get("target", "").strip()
        if not target:
            raise Err(
                types.PhaseError(
                    message="config.target is missing: set it in this phase's config, "
                    'e.g. config = { target = "world" }',
                    details=None,
                )
            )
        if ctx.operation == types.Operation.ROLLBACK:
            return types.PhaseReport(
                outcome=types.Outcome_Skipped("nothing to undo on a rollback"),
                summary=f"skipped for rollback to {ctx.release.version}",
                outputs=[],
            )
        greeting = f"hello, {target}"
        host.log(host.LogLevel.INFO, f"{greeting} (phase {ctx.phase}, {ctx.release.version})")
        return types.PhaseReport(
            outcome=types.Outcome_Completed(),
            summary=f"greeted {target} for {ctx.release.version}",
            outputs=[("greeting", greeting), ("version", ctx.release.version)],
        )
