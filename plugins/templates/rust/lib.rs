//! {{name}}: a Stagecraft deploy phase written in Rust.
//!
//! `run` gets the phase's context (release, config, vars, earlier phases' outputs) and returns
//! a report, or a `PhaseError` that fails the phase with its message.

// `generate_all`: the world imports wasi:http (and with it wasi:io and wasi:clocks), whose
// bindings are generated here too, from wit/deps.
wit_bindgen::generate!({ world: "phase-plugin", path: "wit", generate_all });

use exports::stagecraft::phase::phase::Guest;
use stagecraft::phase::host::{log, LogLevel};
use stagecraft::phase::types::{
    Operation, Outcome, PhaseContext, PhaseError, PhaseReport, PluginInfo,
};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Greets config.target, after checking config.check_url if set; \
                          nothing to do on a rollback."
                .into(),
            phases: Vec::new(),
        }
    }

    fn run(ctx: PhaseContext) -> Result<PhaseReport, PhaseError> {
        let config = |key: &str| {
            ctx.config
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, value)| value.trim().to_string())
                .unwrap_or_default()
        };
        let target = config("target");
        if target.is_empty() {
            return Err(error(
                "config.target is missing: set it in this phase's config, \
                 e.g. config = { target = \"world\" }",
            ));
        }
        if ctx.operation == Operation::Rollback {
            return Ok(PhaseReport {
                outcome: Outcome::Skipped("nothing to undo on a rollback".into()),
                summary: format!("skipped for rollback to {}", ctx.release.version),
                outputs: Vec::new(),
            });
        }
        let check_url = config("check_url");
        if !check_url.is_empty() {
            // The host sends it only if the URL's origin is in the phase's net grant, e.g.
            // net = ["https://status.example.com"]; otherwise the error says what to add.
            let status = get_status(&check_url)
                .map_err(|why| error(&format!("check_url {check_url}: {why}")))?;
            if !(200..300).contains(&status) {
                return Err(error(&format!("check_url {check_url} answered {status}")));
            }
            log(LogLevel::Info, &format!("{check_url} answered {status}"));
        }
        let greeting = format!("hello, {target}");
        log(
            LogLevel::Info,
            &format!("{greeting} (phase {}, {})", ctx.phase, ctx.release.version),
        );
        Ok(PhaseReport {
            outcome: Outcome::Completed,
            summary: format!("greeted {target} for {}", ctx.release.version),
            outputs: vec![
                ("greeting".into(), greeting),
                ("version".into(), ctx.release.version.clone()),
            ],
        })
    }
}

fn error(message: &str) -> PhaseError {
    PhaseError {
        message: message.into(),
        details: None,
    }
}

/// `GET url` through the host's wasi:http, blocking; the response's status. (The Stagecraft
/// repository's `stagecraft-plugin-sdk` has a fuller client: `http::get(url)`, bodies, headers.)
fn get_status(url: &str) -> Result<u16, String> {
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err("only http:// and https:// URLs can be requested".into()),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |what: &str| format!("invalid {what}");
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let body = request.body().map_err(|()| "no request body")?;
    let response = outgoing_handler::handle(request, None).map_err(describe)?;
    OutgoingBody::finish(body, None).map_err(describe)?;
    response.subscribe().block();
    match response.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(code))) => Err(describe(code)),
        _ => Err("the response was lost".into()),
    }
}

/// A refusal by the host (`internal-error`) carries its reason, naming the grant to add.
fn describe(code: ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(why)) => why,
        other => format!("{other:?}"),
    }
}

export!(Plugin);
