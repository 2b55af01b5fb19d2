//! `builtin:http-check`: the post-rollout check people otherwise write by hand. It requests
//! `config.url` until the answer is what the config expects, waiting longer between attempts
//! each time, and fails the phase (so an automatic rollback can follow) when it never is.
//!
//! config (placeholders such as `{{version}}` are substituted in every value):
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `url` | what to request (`http://` or `https://`; its origin must be in the phase's `net` grant) | required |
//! | `method` | `GET`, `HEAD`, ... | `GET` |
//! | `expect_status` | `2xx`, `200`, `200,204`, `200-299` | `2xx` |
//! | `body_contains` | a substring the body must contain | none |
//! | `json_field` | a dotted path (`build.version`) that must exist in a JSON body | none |
//! | `json_equals` | the value `json_field` must have (strings compared as text) | any value |
//! | `attempts` | how many requests at most | `10` |
//! | `backoff` | the wait after the first failed attempt, doubled after each (`500ms`, `2s`) | `500ms` |
//! | `max_backoff` | the longest wait between attempts | `5s` |
//! | `request_timeout` | how long one attempt may wait to connect and for the answer to begin | `10s` |
//!
//! The phase's `timeout` still bounds the whole check: keep `attempts` x `max_backoff` within it.
//!
//! outputs: `status` (the last answer's status, empty if none came), `latency_ms` (of the last
//! attempt), `attempts`, `url`.

use std::time::{Duration, Instant};

use stagecraft_plugin_sdk::{export_phase, http, log, Context, Error, Info, Phase, Report};

struct HttpCheck;

/// What one attempt found wrong, or `None` when it passed.
type Verdict = Option<String>;

/// The statuses `expect_status` accepts.
#[derive(Debug, PartialEq, Eq)]
struct Expected(Vec<(u16, u16)>);

impl Expected {
    fn parse(text: &str) -> Result<Expected, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let range = if let Some(class) = part.strip_suffix("xx") {
                let class: u16 = class
                    .parse()
                    .ok()
                    .filter(|c| (1..=5).contains(c))
                    .ok_or_else(|| bad_status(part))?;
                (class * 100, class * 100 + 99)
            } else if let Some((low, high)) = part.split_once('-') {
                let low = status_number(low.trim())?;
                let high = status_number(high.trim())?;
                if low > high {
                    return Err(bad_status(part));
                }
                (low, high)
            } else {
                let one = status_number(part)?;
                (one, one)
            };
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err(bad_status(text));
        }
        Ok(Expected(ranges))
    }

    fn accepts(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
    }
}

fn status_number(text: &str) -> Result<u16, String> {
    text.parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| bad_status(text))
}

fn bad_status(text: &str) -> String {
    format!("expect_status: {text:?} is not a status list; write e.g. 2xx, 200, 200,204 or 200-299")
}

/// `500ms`, `2s`, `1m`.
fn duration(key: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{key}: {text:?} is not a duration; write e.g. 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{key}: {text:?} is not a duration; write e.g. 500ms, 2s or 1m"
        )),
    }
}

/// The value at a dotted path of a JSON document.
fn json_at<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(doc, |value, key| match value {
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => value.get(key),
    })
}

struct Check {
    method: String,
    url: String,
    expect: Expected,
    body_contains: Option<String>,
    json_field: Option<String>,
    json_equals: Option<String>,
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
}

impl Check {
    fn from_config(ctx: &Context) -> Result<Check, String> {
        let get = |key: &str| ctx.config(key).map(|v| ctx.substitute(v));
        let url = get("url").ok_or(
            "config.url is missing: add url = \"https://...\" to the phase's config (and its \
             origin to the phase's net grant)",
        )?;
        let attempts: u32 = get("attempts")
            .unwrap_or_else(|| "10".to_string())
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or("attempts: a whole number, at least 1")?;
        Ok(Check {
            method: get("method").unwrap_or_else(|| "GET".to_string()),
            url,
            expect: Expected::parse(&get("expect_status").unwrap_or_else(|| "2xx".to_string()))?,
            body_contains: get("body_contains"),
            json_field: get("json_field"),
            json_equals: get("json_equals"),
            attempts,
            backoff: duration("backoff", &get("backoff").unwrap_or_else(|| "500ms".into()))?,
            max_backoff: duration(
                "max_backoff",
                &get("max_backoff").unwrap_or_else(|| "5s".into()),
            )?,
            request_timeout: duration(
                "request_timeout",
                &get("request_timeout").unwrap_or_else(|| "10s".into()),
            )?,
        })
    }

    /// Whether `response` is what the config expects.
    fn judge(&self, response: &http::Response) -> Verdict {
        if !self.expect.accepts(response.status) {
            return Some(format!("status {}", response.status));
        }
        let text = response.text();
        if let Some(needle) = &self.body_contains {
            if !text.contains(needle.as_str()) {
                return Some(format!(
                    "status {}, but the body lacks {needle:?}",
                    response.status
                ));
            }
        }
        if let Some(field) = &self.json_field {
            let doc: serde_json::Value = match serde_json::from_str(&text) {
                Ok(doc) => doc,
                Err(e) => {
                    return Some(format!(
                        "status {}, but the body is not JSON ({e})",
                        response.status
                    ))
                }
            };
            let Some(value) = json_at(&doc, field) else {
                return Some(format!(
                    "status {}, but the JSON has no {field}",
                    response.status
                ));
            };
            if let Some(want) = &self.json_equals {
                let got = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if got != *want {
                    return Some(format!(
                        "status {}, but {field} is {got:?}, not {want:?}",
                        response.status
                    ));
                }
            }
        }
        None
    }
}

/// The start of a body, one line, for the failure's details.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).replace(['\r', '\n'], " ");
    if body.len() > 512 {
        format!("{text}…")
    } else {
        text
    }
}

impl Phase for HttpCheck {
    fn describe() -> Info {
        Info::new(
            "http-check",
            env!("CARGO_PKG_VERSION"),
            "Checks that config.url answers as expected (status, body text, JSON field), retrying with backoff; needs the url's origin in the phase's net grant.",
        )
    }

    fn run(ctx: &Context) -> Result<Report, Error> {
        let check = Check::from_config(ctx)?;
        let what = format!("{} {}", check.method, check.url);
        let mut wait = check.backoff;
        let mut last_status: Option<u16> = None;
        let mut last_latency = Duration::ZERO;
        let mut last_problem = String::new();
        let mut last_body = Vec::new();
        for attempt in 1..=check.attempts {
            let started = Instant::now();
            let result = http::Request::new(&check.method, &check.url)
                .timeout(check.request_timeout)
                .send();
            last_latency = started.elapsed();
            let verdict = match &result {
                Ok(response) => {
                    last_status = Some(response.status);
                    last_body = response.body.clone();
                    check.judge(response)
                }
                Err(e) => {
                    // A refusal by the sandbox will not change on retry.
                    if e.message.contains("network access refused") {
                        return Err(Error::new(format!("{} {}", check.method, e.message)));
                    }
                    Some(e.message.clone())
                }
            };
            let latency_ms = last_latency.as_millis();
            match verdict {
                None => {
                    let status = last_status.unwrap_or_default();
                    let tries = if attempt == 1 {
                        "on the first attempt".to_string()
                    } else {
                        format!("after {attempt} attempts")
                    };
                    // The latency is an output, not in the summary: the same answer makes the
                    // same summary.
                    return Ok(
                        Report::completed(format!("{what} answered {status} {tries}"))
                            .output("status", status.to_string())
                            .output("latency_ms", latency_ms.to_string())
                            .output("attempts", attempt.to_string())
                            .output("url", check.url.clone()),
                    );
                }
                Some(problem) => {
                    last_problem = problem;
                    if attempt < check.attempts {
                        log::info(&format!(
                            "attempt {attempt}/{}: {last_problem}; retrying in {} ms",
                            check.attempts,
                            wait.as_millis()
                        ));
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(check.max_backoff);
                    }
                }
            }
        }
        let mut error = Error::new(format!(
            "{what} failed {} attempts; last: {last_problem} (expected {})",
            check.attempts,
            ctx.config("expect_status").unwrap_or("2xx")
        ));
        if !last_body.is_empty() {
            error = error.with_details(format!("last body: {}", body_excerpt(&last_body)));
        }
        log::warn(&format!(
            "last attempt took {} ms; status {}",
            last_latency.as_millis(),
            last_status.map_or("none".to_string(), |s| s.to_string())
        ));
        Err(error)
    }
}

export_phase!(HttpCheck);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_parse() {
        let e = Expected::parse("2xx").unwrap();
        assert!(e.accepts(200) && e.accepts(299) && !e.accepts(300) && !e.accepts(199));
        let e = Expected::parse("200, 204").unwrap();
        assert!(e.accepts(204) && !e.accepts(201));
        let e = Expected::parse("200-302").unwrap();
        assert!(e.accepts(301) && !e.accepts(303));
        for bad in ["", "abc", "6xx", "302-200", "99", "2x"] {
            assert!(Expected::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration("k", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("k", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("k", "1m").unwrap(), Duration::from_secs(60));
        assert!(duration("k", "2h").is_err());
        assert!(duration("k", "fast").is_err());
    }

    #[test]
    fn json_paths_reach_objects_and_arrays() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"build":{"version":"v2","tags":["a","b"]},"n":3}"#).unwrap();
        assert_eq!(json_at(&doc, "build.version").unwrap(), "v2");
        assert_eq!(json_at(&doc, "build.tags.1").unwrap(), "b");
        assert_eq!(json_at(&doc, "n").unwrap(), 3);
        assert!(json_at(&doc, "build.missing").is_none());
    }
}
