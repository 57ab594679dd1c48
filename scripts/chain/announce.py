#!/usr/bin/env python3
"""Publish each configured miner hotkey's public IP and port on chain (the `serve_axon` extrinsic).

  announce.py [--policies policies] [--wallet-path ~/.bittensor/wallets] [--network finney]
              [--netuid 72] [--default-port 8091] [--dry-run] [--force]

Reads every `*.toml` in --policies except models.toml and chain.toml. A hotkey policy with an
`[axon.announce]` table is announced:

  name = "speed"
  ss58 = "5F..."                 # the miner hotkey
  [axon]
  listen = "0.0.0.0:8101"        # optional
  [axon.announce]
  wallet = "miner"               # wallet (coldkey) name under --wallet-path
  hotkey = "speed"               # hotkey name inside that wallet
  ip = "203.0.113.7"             # the public address validators reach (this one, a documentation
                                 # address, is refused without --force: put your real one)
  port = 8101                    # optional: default the listen port, else --default-port

Checks before anything is sent: the wallet's hotkey file exists and holds `ss58`; the IP parses
and is globally routable (private, loopback, reserved... refused unless --force); 1 <= port <=
65535. --dry-run prints what would be published and needs no chain. Otherwise, per hotkey: skip
it if the chain already has this ip:port for it, else sign `SubtensorModule.serve_axon` with the
hotkey (the coldkey's private key is never needed: only coldkeypub.txt), wait for finalization,
read the axon back. One result line per hotkey; exit 1 if any failed.
"""

import argparse
import dataclasses
import ipaddress
import os
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

PROTOCOL = 4  # what the SDK's serve_axon_extrinsic publishes
SKIP_FILES = {"models.toml", "chain.toml"}


class AnnounceError(Exception):
    """A hotkey that cannot be announced; str() is the one-line reason."""


@dataclasses.dataclass
class Plan:
    file: str
    name: str
    ss58: str
    coldkey_ss58: str
    wallet_name: str
    hotkey_name: str
    ip: str
    port: int
    wallet: object = None
    encrypted: bool = False
    warning: str = ""

    def what(self, netuid):
        return f"netuid={netuid} hotkey={self.ss58} ip={self.ip} port={self.port} protocol={PROTOCOL}"


# ---------------------------------------------------------------------------------------------
# Reading and checking the configuration


def policy_files(policies_dir):
    if not os.path.isdir(policies_dir):
        raise AnnounceError(f"policies folder {policies_dir} does not exist")
    return [
        os.path.join(policies_dir, f)
        for f in sorted(os.listdir(policies_dir))
        if f.endswith(".toml") and f not in SKIP_FILES and os.path.isfile(os.path.join(policies_dir, f))
    ]


DOCUMENTATION_NETWORKS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def check_ip(ip, force):
    """(normalized ip, warning or ""); AnnounceError when it is not usable."""
    if not isinstance(ip, str) or not ip.strip():
        raise AnnounceError(f"[axon.announce] ip must be a string, got {ip!r}")
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise AnnounceError(f"[axon.announce] ip {ip!r} is not an IPv4 or IPv6 address") from None
    if addr.is_global:
        return str(addr), ""
    # the ranges RFC 5737 / RFC 3849 set aside for examples: Python counts them as private,
    # but they are not a LAN address, and saying so sends the operator looking at the wrong thing
    if any(addr in ipaddress.ip_network(n) for n in DOCUMENTATION_NETWORKS if ipaddress.ip_network(n).version == addr.version):
        msg = (f"ip {addr} is a documentation address (RFC 5737/3849, for examples only): "
               "validators on the internet cannot reach it; put your public IP in [axon.announce]")
        if not force:
            raise AnnounceError(msg + " (refused; --force publishes it anyway)")
        return str(addr), "WARNING " + msg + " (--force: publishing anyway)"
    kinds = [
        k
        for k in ("unspecified", "loopback", "private", "link_local", "multicast", "reserved")
        if getattr(addr, f"is_{k}", False)
    ]
    kind = "/".join(kinds) if kinds else "not globally routable"
    msg = f"ip {addr} is {kind}: validators on the internet cannot reach it"
    if not force:
        raise AnnounceError(msg + " (refused; --force publishes it anyway)")
    return str(addr), "WARNING " + msg + " (--force: publishing anyway)"


def check_port(port, what):
    if isinstance(port, bool) or not isinstance(port, int):
        raise AnnounceError(f"{what} must be an integer, got {port!r}")
    if not 1 <= port <= 65535:
        raise AnnounceError(f"{what} {port} is out of range 1..65535")
    return port


def listen_port(listen):
    """The port of `[axon] listen = "host:port"` ("[::]:8101" too)."""
    if not isinstance(listen, str) or ":" not in listen:
        raise AnnounceError(f"[axon] listen {listen!r} is not host:port")
    port = listen.rsplit(":", 1)[1]
    if not port.isdigit():
        raise AnnounceError(f"[axon] listen {listen!r} has no numeric port")
    return check_port(int(port), "[axon] listen port")


def load_wallet(wallet_path, wallet_name, hotkey_name):
    """(bt.Wallet, hotkey ss58, coldkey ss58, hotkey encrypted?) or AnnounceError naming the path."""
    import bittensor as bt

    if not os.path.isdir(wallet_path):
        raise AnnounceError(f"wallet path {wallet_path} does not exist")
    wallet_dir = os.path.join(wallet_path, wallet_name)
    if not os.path.isdir(wallet_dir):
        raise AnnounceError(f"wallet {wallet_name!r} does not exist: no folder {wallet_dir}")
    w = bt.Wallet(name=wallet_name, hotkey=hotkey_name, path=wallet_path)
    hk_path = w.hotkey_file.path
    if not w.hotkey_file.exists_on_device():
        raise AnnounceError(f"hotkey {hotkey_name!r} of wallet {wallet_name!r} does not exist: no file {hk_path}")
    ck_path = w.coldkeypub_file.path
    if not w.coldkeypub_file.exists_on_device():
        raise AnnounceError(f"wallet {wallet_name!r} has no coldkeypub: no file {ck_path}")
    try:
        encrypted = w.hotkey_file.is_encrypted()
        if encrypted:
            if not w.hotkeypub_file.exists_on_device():
                raise AnnounceError(
                    f"hotkey file {hk_path} is encrypted and there is no {w.hotkeypub_file.path} to read its address"
                )
            ss58 = w.hotkeypub.ss58_address
        else:
            ss58 = w.hotkey.ss58_address
        coldkey = w.coldkeypub.ss58_address
    except AnnounceError:
        raise
    except Exception as e:
        raise AnnounceError(f"cannot read wallet {wallet_name}/{hotkey_name} ({hk_path}): {_one_line(e)}") from None
    return w, ss58, coldkey, encrypted


def plan_hotkey(path, doc, wallet_path, default_port, force):
    """The Plan for one policy file, None when it has no [axon.announce], AnnounceError if wrong."""
    axon = doc.get("axon")
    if not isinstance(axon, dict) or "announce" not in axon:
        return None
    if not isinstance(axon["announce"], dict):
        raise AnnounceError("[axon.announce] must be a table")
    ann = axon["announce"]
    name = doc.get("name") or os.path.splitext(os.path.basename(path))[0]
    ss58 = doc.get("ss58")
    if not isinstance(ss58, str) or not ss58:
        raise AnnounceError("the top-level `ss58` (the miner hotkey's address) is missing")
    for key in ("wallet", "hotkey"):
        if not isinstance(ann.get(key), str) or not ann.get(key):
            raise AnnounceError(f"[axon.announce] {key} (a name) is missing")
    unknown = set(ann) - {"wallet", "hotkey", "ip", "port"}
    if unknown:
        raise AnnounceError(f"[axon.announce] has unknown keys: {', '.join(sorted(unknown))}")
    if "ip" not in ann:
        raise AnnounceError("[axon.announce] ip is missing")
    ip, warning = check_ip(ann["ip"], force)
    if "port" in ann:
        port = check_port(ann["port"], "[axon.announce] port")
    elif "listen" in axon:
        port = listen_port(axon["listen"])
    else:
        port = check_port(default_port, "--default-port")
    w, wallet_ss58, coldkey, encrypted = load_wallet(wallet_path, ann["wallet"], ann["hotkey"])
    if wallet_ss58 != ss58:
        raise AnnounceError(
            f"ss58 mismatch: {path} says ss58 = {ss58}, but wallet {ann['wallet']}/{ann['hotkey']} "
            f"({w.hotkey_file.path}) holds {wallet_ss58}"
        )
    return Plan(
        file=path,
        name=str(name),
        ss58=ss58,
        coldkey_ss58=coldkey,
        wallet_name=ann["wallet"],
        hotkey_name=ann["hotkey"],
        ip=ip,
        port=port,
        wallet=w,
        encrypted=encrypted,
        warning=warning,
    )


def _one_line(exc):
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Publishing


def _same_endpoint(axon_info, ip, port):
    try:
        return (
            axon_info is not None
            and int(axon_info.port) == port
            and ipaddress.ip_address(axon_info.ip) == ipaddress.ip_address(ip)
        )
    except (ValueError, TypeError, AttributeError):
        return False


def _neuron(subtensor, ss58, netuid):
    n = subtensor.get_neuron_for_pubkey_and_subnet(ss58, netuid=netuid)
    return None if n is None or getattr(n, "is_null", False) else n


def publish(subtensor, plan, netuid, wait_for_finalization=True):
    """("ok" | "skip" | "fail", message). Sends one serve_axon extrinsic signed by the hotkey."""
    from bittensor.core.extrinsics import serving
    from bittensor.core.settings import version_as_int
    from bittensor.core.types import AxonServeCallParams
    from bittensor.utils import networking, unlock_key

    neuron = _neuron(subtensor, plan.ss58, netuid)
    if neuron is None:
        return "fail", f"hotkey {plan.ss58} is not registered on netuid {netuid} (serving needs a UID)"
    if _same_endpoint(neuron.axon_info, plan.ip, plan.port):
        return "skip", f"uid {neuron.uid} already serves {plan.ip}:{plan.port} on netuid {netuid}"
    if plan.encrypted and not sys.stdin.isatty():
        return "fail", f"hotkey file {plan.wallet.hotkey_file.path} is encrypted and there is no terminal for its password"
    unlock = unlock_key(plan.wallet, "hotkey")
    if not unlock.success:
        return "fail", f"cannot unlock hotkey {plan.wallet.hotkey_file.path}: {unlock.message}"
    params = AxonServeCallParams(
        version=version_as_int,
        ip=networking.ip_to_int(plan.ip),
        port=plan.port,
        ip_type=networking.ip_version(plan.ip),
        netuid=netuid,
        hotkey=plan.ss58,
        coldkey=plan.coldkey_ss58,
        protocol=PROTOCOL,
        placeholder1=0,
        placeholder2=0,
        certificate=None,
    )
    # serving.do_serve_axon is what serve_extrinsic / Subtensor.serve_axon end in; called here
    # directly so the chain's error message reaches the operator (serve_extrinsic only logs it)
    # and nothing builds a bt.Axon (no server, no port bound, no public-IP lookup).
    ok, message = serving.do_serve_axon(
        subtensor=subtensor,
        wallet=plan.wallet,
        call_params=params,
        wait_for_inclusion=False,
        wait_for_finalization=wait_for_finalization,
    )
    if not ok:
        return "fail", f"the chain refused serve_axon: {message or 'no reason given'}"
    was = f"{neuron.axon_info.ip}:{neuron.axon_info.port}"
    if not wait_for_finalization:
        return "ok", f"uid {neuron.uid}: submitted {plan.what(netuid)} (was {was}; not waiting for finalization)"
    after = _neuron(subtensor, plan.ss58, netuid)
    if after is None or not _same_endpoint(after.axon_info, plan.ip, plan.port):
        got = f"{after.axon_info.ip}:{after.axon_info.port}" if after is not None else "no neuron"
        return "fail", f"serve_axon reported success but the chain reads back {got}"
    return "ok", f"uid {neuron.uid}: published {plan.what(netuid)} (was {was}); read back from chain"


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv=None, make_subtensor=None, out=None):
    """Exit code. `make_subtensor(network)` is injectable for tests (default bt.Subtensor)."""
    out = out or sys.stdout

    def say(line):
        print(line, file=out, flush=True)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default="policies", help="folder of hotkey policy files (default policies)")
    p.add_argument("--wallet-path", default="~/.bittensor/wallets", help="default ~/.bittensor/wallets")
    p.add_argument("--network", default="finney", help="finney, test, local, or a ws(s):// endpoint")
    p.add_argument("--netuid", type=int, default=72)
    p.add_argument("--default-port", type=int, default=8091, help="port when neither announce.port nor listen")
    p.add_argument("--dry-run", action="store_true", help="print what would be published; no chain")
    p.add_argument("--force", action="store_true", help="publish a private/loopback/reserved IP anyway")
    p.add_argument("--no-wait", action="store_true", help="do not wait for finalization (no read-back)")
    args = p.parse_args(argv)
    if tomllib is None:
        say("FAIL: Python 3.11+ is needed (tomllib)")
        return 2
    wallet_path = os.path.abspath(os.path.expanduser(args.wallet_path))

    failed = 0
    plans = []
    try:
        files = policy_files(args.policies)
    except AnnounceError as e:
        say(f"FAIL: {e}")
        return 1
    for path in files:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            say(f"FAIL {path}: cannot parse: {_one_line(e)}")
            failed += 1
            continue
        try:
            plan = plan_hotkey(path, doc, wallet_path, args.default_port, args.force)
        except AnnounceError as e:
            say(f"FAIL {path}: {e}")
            failed += 1
            continue
        if plan is None:
            say(f"note {path}: no [axon.announce], skipped")
            continue
        if plan.warning:
            say(f"{plan.warning} ({path})")
        plans.append(plan)

    # one hotkey announced by two files: fine if they agree, refused if they do not
    by_key = {}
    for plan in plans:
        by_key.setdefault(plan.ss58, []).append(plan)
    keep = []
    for ss58, group in by_key.items():
        endpoints = {(g.ip, g.port) for g in group}
        if len(endpoints) > 1:
            for g in group:
                others = ", ".join(f"{o.file} ({o.ip}:{o.port})" for o in group if o is not g)
                say(f"FAIL {g.name}: hotkey {ss58} is also announced by {others} with another endpoint")
                failed += 1
            continue
        keep.append(group[0])
        for g in group[1:]:
            say(f"note {g.file}: same hotkey and endpoint as {group[0].file}, announced once")
    plans = keep

    if not plans:
        if not failed:
            say(f"FAIL: no policy file in {args.policies} has an [axon.announce] table: nothing to announce")
        return 1

    if args.dry_run:
        for plan in plans:
            say(
                f"dry-run {plan.name}: would publish {plan.what(args.netuid)} "
                f"(wallet {plan.wallet_name}/{plan.hotkey_name}, coldkey {plan.coldkey_ss58}, from {plan.file})"
            )
        return 1 if failed else 0

    try:
        if make_subtensor is None:
            import bittensor as bt

            subtensor = bt.Subtensor(network=args.network)
        else:
            subtensor = make_subtensor(args.network)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the SDK may sys.exit() when it cannot connect
        for plan in plans:
            say(f"FAIL {plan.name}: cannot connect to {args.network}: {_one_line(e)}")
        return 1
    try:
        for plan in plans:
            try:
                status, message = publish(subtensor, plan, args.netuid, wait_for_finalization=not args.no_wait)
            except KeyboardInterrupt:
                raise
            except BaseException as e:
                status, message = "fail", _one_line(e)
            label = {"ok": "ok", "skip": "skip", "fail": "FAIL"}[status]
            say(f"{label} {plan.name}: {message}")
            failed += status == "fail"
    finally:
        if make_subtensor is None:
            try:
                subtensor.close()
            except BaseException:
                pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
