//! `builtin:noop`: completes at once and says which phase and version it was asked to run.
//! Useful as a placeholder phase and as the smallest possible plugin.

use stagecraft_plugin_sdk::{export_phase, Context, Error, Info, Phase, Report};

struct Noop;

impl Phase for Noop {
    fn describe() -> Info {
        Info::new(
            "noop",
            env!("CARGO_PKG_VERSION"),
            "Does nothing and completes; the summary names the phase and version.",
        )
    }

    fn run(ctx: &Context) -> Result<Report, Error> {
        Ok(Report::completed(format!(
            "{} of {} did nothing (noop)",
            ctx.phase,
            ctx.target_version()
        )))
    }
}

export_phase!(Noop);
