//! The local stand-in servers the tests run against where the real thing cannot run here
//! (`tests/standins/`): started on a free port, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::repo;

/// `tests/standins/openai_chat.py`: an OpenAI-compatible chat-completions server with vision.
pub struct OpenAiStandIn {
    child: Child,
    /// Base URL up to `/v1`.
    pub url: String,
}

impl OpenAiStandIn {
    pub fn start(api_key: Option<&str>) -> OpenAiStandIn {
        let mut cmd = Command::new(repo().join(".venv/bin/python"));
        cmd.arg(repo().join("tests/standins/openai_chat.py")).args(["--port", "0"]);
        if let Some(k) = api_key {
            cmd.args(["--api-key", k]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start the OpenAI stand-in (make setup makes .venv)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read its address");
        let url =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("stand-in said {line:?}")).to_string();
        OpenAiStandIn { child, url }
    }

    fn root(&self) -> String {
        self.url.trim_end_matches("/v1").to_string()
    }

    /// How the next requests are served: `ok`, `500`, `503`, `429`, `malformed`, `empty`,
    /// `die`, `slow` (with `delay_ms`).
    pub fn mode(&self, mode: &str, delay_ms: u64) {
        ureq::post(&format!("{}/_control", self.root()))
            .send_json(json!({"mode": mode, "delay_ms": delay_ms}))
            .expect("control the stand-in");
    }

    /// Chat-completion requests it has received.
    pub fn requests(&self) -> u64 {
        let v: Value = ureq::get(&format!("{}/_stats", self.root()))
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .call()
            .expect("stand-in stats")
            .body_mut()
            .read_json()
            .expect("stats JSON");
        v["requests"].as_u64().unwrap_or(0)
    }
}

impl Drop for OpenAiStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
