"""changelog: records every release of an environment in a Markdown changelog.

A Python phase plugin (see docs/writing-plugins.md). It appends one entry per release to
`<dir>/<environment>.md`, a file in a directory the phase's `write` grant opens:

    [phases.finalize]
    plugin = "target/wasm-plugins/examples/changelog-py.wasm"
    config = { dir = "changelog", title = "Releases of {{environment}}" }
    [phases.finalize.grants]
    write = ["changelog"]

Each entry names the version, commit and release, the environment's `vars`, and the outputs of
the phases that ran before this one (where the build put the site, what was verified). A release
that is already in the file is not written twice: the phase ends `skipped`.
"""

import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, stagecraft_phase_types as types

VERSION = "0.1.0"


def log(message):
    host.log(host.LogLevel.INFO, message)


def fail(message, details=None):
    """A phase error: the phase fails with `message`; `details` is kept in the release record."""
    raise Err(types.PhaseError(message=message, details=details))


def substitute(text, ctx):
    """The placeholders the built-ins know: {{version}}, {{environment}}, {{release_id}},
    {{commit}} and {{var.NAME}}."""
    values = {
        "version": ctx.release.version,
        "environment": ctx.release.environment,
        "release_id": ctx.release.id,
        "commit": ctx.release.commit,
    }
    values.update({f"var.{k}": v for k, v in ctx.vars})
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def entry(ctx):
    """The Markdown for one release."""
    release = ctx.release
    if ctx.operation == types.Operation.ROLLBACK and ctx.rollback_target is not None:
        what = f"rollback to {ctx.rollback_target.version} (from {ctx.rollback_target.release_id})"
    else:
        what = "deploy"
    lines = [f"## {release.version} ({release.id})", "", f"- operation: {what}"]
    if release.commit:
        lines.append(f"- commit: {release.commit}")
    if release.previous_id:
        lines.append(f"- previous release: {release.previous_id}")
    for key, value in ctx.vars:
        lines.append(f"- var {key}: {value}")
    for earlier in ctx.earlier_outputs:
        for key, value in earlier.outputs:
            lines.append(f"- {earlier.phase}.{key}: {value}")
    return "\n".join(lines) + "\n"


class Phase(exports.Phase):
    def describe(self):
        return types.PluginInfo(
            name="changelog",
            version=VERSION,
            description="Appends each release (version, commit, vars, earlier phases' outputs) "
            "to config.dir/<environment>.md.",
            phases=[],
        )

    def run(self, ctx):
        config = dict(ctx.config)
        directory = config.get("dir", "").strip()
        if not directory:
            fail(
                "config.dir is missing: set it to a directory in this phase's write grant, "
                'e.g. config = { dir = "changelog" }'
            )
        title = substitute(config.get("title", "Releases of {{environment}}"), ctx)
        path = os.path.join(directory, ctx.release.environment + ".md")

        try:
            os.makedirs(directory, exist_ok=True)
            try:
                with open(path, encoding="utf-8") as f:
                    existing = f.read()
            except FileNotFoundError:
                existing = ""
            if f"({ctx.release.id})" in existing:
                return types.PhaseReport(
                    outcome=types.Outcome_Skipped(f"{ctx.release.id} is already in {path}"),
                    summary=f"{path} already records {ctx.release.id}",
                    outputs=[("changelog", path)],
                )
            with open(path, "a", encoding="utf-8") as f:
                if not existing:
                    f.write(f"# {title}\n")
                f.write("\n" + entry(ctx))
            entries = existing.count("\n## ") + 1
        except OSError as e:
            fail(
                f"cannot write {path}: {e.strerror or e}",
                f"is {directory} inside this phase's write grant? ({e!r})",
            )

        log(f"recorded {ctx.release.version} in {path} ({entries} entries)")
        return types.PhaseReport(
            outcome=types.Outcome_Completed(),
            summary=f"recorded {ctx.release.version} in {path}",
            outputs=[("changelog", path), ("entries", str(entries))],
        )
