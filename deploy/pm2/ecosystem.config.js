// cascade and its metagraph sync under PM2, from a checkout set up with `make setup` and
// `bash scripts/bt_venv.sh` (deploy/README.md):
//
//   pm2 start deploy/pm2/ecosystem.config.js && pm2 save && pm2 startup   # once
//   pm2 sendSignal SIGHUP cascade       # re-read every file (they are also watched)
//   pm2 logs cascade                    # JSON lines
//
// 127.0.0.1:8091 serves /admin, /metrics and the HTTP API: keep it on loopback. Validators
// reach the hotkeys' axon ports ([axon] listen = "0.0.0.0:8101" in the hotkey files).
const path = require('path');

const root = path.resolve(__dirname, '..', '..');

module.exports = {
  apps: [
    {
      name: 'cascade',
      cwd: root,
      // checks models, components and policies, then execs cascade (same pid): missing
      // files are printed and it exits 78 (EX_CONFIG), which PM2 does not restart
      script: path.join(root, 'deploy', 'cascade-entrypoint.sh'),
      interpreter: 'bash',
      args: [
        'serve',
        '--listen', '127.0.0.1:8091',
        '--policies', path.join(root, 'policies'),
        '--log-format', 'json',
        '--drain-s', '20',
      ],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      // exit 78 is not restarted (`pm2 ls` may still say "waiting restart", with 0 restarts:
      // PM2 5 labels it so when a restart delay is set); any other exit is restarted after
      // 1 s, 1.5 s, 2.25 s, ... up to 15 s
      stop_exit_codes: [78],
      exp_backoff_restart_delay: 1000,
      // PM2 stops with SIGINT (its daemon-wide PM2_KILL_SIGNAL), which cascade treats as
      // SIGTERM: drain requests in flight (--drain-s 20), release the models; SIGKILL after
      kill_timeout: 30000,
      // cascade watches policies/ and the components itself
      watch: false,
      time: false,
      merge_logs: true,
      env: {
        RUST_LOG: 'info,ort=warn',
        // ORT_DYLIB_PATH: default target/ort/libonnxruntime.so beside target/release
      },
    },
    {
      name: 'cascade-metagraph',
      cwd: root,
      script: path.join(root, 'scripts', 'chain', 'metagraph_sync.py'),
      interpreter: path.join(root, '.cache', 'bt-venv', 'bin', 'python'),
      args: [
        '--network', 'finney',
        '--netuid', '72',
        '--out', path.join(root, 'policies', 'metagraph.json'),
      ],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      restart_delay: 30000,
      // SIGINT exits 0 between syncs
      kill_timeout: 30000,
      watch: false,
      time: true,
      env: {
        PYTHONUNBUFFERED: '1',
      },
    },
  ],
};
