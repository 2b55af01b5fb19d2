//! The pipeline's [`Runner`] over the real wasmtime host.

use super::Runner;
use crate::manifest::PhaseSpec;
use crate::plugin::{
    LoadedPlugin, LogSink, PhaseContext, PhaseFailure, PhaseReport, PluginHost, Sandbox,
};

impl Runner for PluginHost {
    type Loaded = LoadedPlugin;

    fn load(&self, spec: &PhaseSpec, compiling: &dyn Fn(bool)) -> anyhow::Result<LoadedPlugin> {
        PluginHost::load_with(self, &spec.source, compiling)
    }

    fn digest(&self, loaded: &LoadedPlugin) -> String {
        loaded.digest().to_string()
    }

    fn was_cached(&self, loaded: &LoadedPlugin) -> bool {
        loaded.was_cached()
    }

    fn bytes(&self, spec: &PhaseSpec) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
        crate::plugin::component_bytes(&spec.source)
    }

    fn run(
        &self,
        loaded: &LoadedPlugin,
        ctx: &PhaseContext,
        sandbox: &Sandbox,
        sink: &dyn LogSink,
    ) -> Result<PhaseReport, PhaseFailure> {
        PluginHost::run(self, loaded, ctx, sandbox, sink).result
    }
}
