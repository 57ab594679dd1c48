//! A real KServe v2 server for the remote-engine tests: MLServer (Seldon, from PyPI, installed
//! by scripts/test.sh in `.cache/mlserver-venv`) serving ONNX files through
//! `tests/kserve/onnx_runtime.py`. Killed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{repo, TempDir};

pub struct MlServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl MlServer {
    /// Serves each (name, ONNX file, extra parameters) and waits until every model is ready.
    pub fn start(models: &[(&str, &Path, serde_json::Value)]) -> MlServer {
        let dir = TempDir::new("mlserver");
        std::fs::copy(repo().join("tests/kserve/onnx_runtime.py"), dir.0.join("onnx_runtime.py")).expect("runtime");
        let (http, grpc, metrics) = (free_port(), free_port(), free_port());
        let settings = json!({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 0, "host": "127.0.0.1"});
        dir.write("settings.json", &settings.to_string());
        for (name, file, extra) in models {
            std::fs::create_dir_all(dir.0.join(name)).expect("model dir");
            let s = json!({"name": name, "implementation": "onnx_runtime.OnnxModel", "parameters": {"uri": file, "extra": extra}});
            std::fs::write(dir.0.join(name).join("model-settings.json"), s.to_string()).expect("model settings");
        }
        let bin = repo().join(".cache/mlserver-venv/bin/mlserver");
        assert!(bin.exists(), "{} is missing: scripts/test.sh installs it", bin.display());
        let log = std::fs::File::create(dir.0.join("mlserver.log")).expect("log");
        let child = Command::new(bin)
            .arg("start")
            .arg(&dir.0)
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start MLServer");
        let server = MlServer { child, url: format!("http://127.0.0.1:{http}"), dir };
        let until = Instant::now() + Duration::from_secs(90);
        for (name, ..) in models {
            let ready = format!("{}/v2/models/{name}/ready", server.url);
            loop {
                let ok = ureq::get(&ready)
                    .config()
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build()
                    .call()
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(Instant::now() < until, "MLServer not ready: {}", server.log());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("mlserver.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        self.kill();
    }
}
