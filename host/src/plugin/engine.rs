//! The one wasmtime [`Engine`] of the process, and the epoch ticker that makes timeouts work.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances. A running guest hands control back to its caller at every tick
/// and traps at the first tick past its deadline; a shorter tick costs a wake-up per tick for the
/// whole process.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The process-wide engine: compiled code, the compatibility hash of the on-disk cache and the
/// epoch counter are all per engine, so every [`super::PluginHost`] shares one.
pub(crate) fn shared_engine() -> anyhow::Result<Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            start_ticker(&engine);
            Ok(engine)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot create the WebAssembly engine: {e}"))
}

/// Advance the epoch every [`EPOCH_TICK`] for as long as the engine lives. The thread holds
/// only a weak reference, so it never keeps an engine alive by itself.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("stagecraft-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        });
    // Without the ticker timeouts cannot trip; a process that cannot spawn one thread has
    // bigger problems, but say what broke rather than hang later.
    if let Err(e) = spawned {
        eprintln!("warning: cannot start the plugin timeout ticker: {e}; phase timeouts are off");
    }
}
