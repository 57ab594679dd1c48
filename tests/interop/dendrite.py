"""The real bittensor 9.12.2 dendrite against a running cascade, on loopback only.

  python dendrite.py wallets DIR            create local wallets, print {name: ss58} as JSON
  python dendrite.py call DIR SPEC_JSON     run the scenarios, print {scenario: result} as JSON
  python dendrite.py admission DIR SPEC     each caller in SPEC["callers"] calls SPEC["miner"] once
  python dendrite.py batches DIR SPEC       SPEC["n"] validator batches at once, each one
                                            dendrite call to miner-a and miner-b on one port

SPEC_JSON: {"port": P, "pinned_port": Q, "image": "<base64 jpeg>"}.
"""

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

import bittensor as bt
import bittensor.utils.networking as networking
import pydantic

# no traffic leaves loopback: the SDK asks the internet for its IP when a dendrite is built
networking.get_external_ip = lambda: "127.0.0.1"
import bittensor.core.dendrite as dendrite_mod  # noqa: E402

if hasattr(dendrite_mod, "get_external_ip"):
    dendrite_mod.get_external_ip = lambda: "127.0.0.1"


class ImageSynapse(bt.Synapse):
    """As streetvision-subnet defines it."""

    testnet_label: int = -1
    image: str = pydantic.Field(title="Image", default="", frozen=False)
    prediction: float = pydantic.Field(title="Prediction", default=-1.0, frozen=False)

    def deserialize(self):
        return self.prediction


class ExtendedImageSynapse(ImageSynapse):
    model_url: str = ""


class FooSynapse(ImageSynapse):
    pass


NAMES = ["miner-a", "miner-b", "miner-c", "validator", "stranger"]


def wallet(d, name):
    return bt.Wallet(name=name, hotkey="default", path=d)


def make_wallets(d):
    out = {}
    for n in NAMES:
        w = wallet(d, n)
        w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
        out[n] = w.hotkey.ss58_address
    print(json.dumps(out))


def axon_info(w, port):
    return bt.AxonInfo(version=0, ip="127.0.0.1", port=port, ip_type=4, hotkey=w.hotkey.ss58_address, coldkey=w.coldkeypub.ss58_address)


def summary(syn):
    return {
        "prediction": syn.prediction,
        "success": syn.is_success,
        "dendrite_status": syn.dendrite.status_code,
        "axon_status": syn.axon.status_code,
        "message": syn.axon.status_message,
        "dendrite_message": syn.dendrite.status_message,
    }


def raw(port, syn, name="ImageSynapse"):
    """Sends an already signed synapse as the dendrite would, returning (status, body)."""
    body = json.dumps(syn.model_dump()).encode()
    headers = {k: str(v) for k, v in syn.to_headers().items()}
    headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{name}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


async def scenarios(d, spec):
    port, pinned, img = spec["port"], spec["pinned_port"], spec["image"]
    v, stranger = wallet(d, "validator"), wallet(d, "stranger")
    a, b, c = wallet(d, "miner-a"), wallet(d, "miner-b"), wallet(d, "miner-c")
    den = bt.Dendrite(wallet=v)
    res = {}

    async def call(w, p, syn, dend=den):
        out = await dend(axons=[axon_info(w, p)], synapse=syn, timeout=9, deserialize=False)
        return summary(out[0])

    res["image_a"] = await call(a, port, ImageSynapse(image=img))
    res["extended_a"] = await call(a, port, ExtendedImageSynapse(image=img, model_url="https://example.invalid/m"))
    res["image_b_same_port"] = await call(b, port, ImageSynapse(image=img))
    res["image_c_pinned"] = await call(c, pinned, ImageSynapse(image=img))
    res["c_on_shared_port"] = await call(c, port, ImageSynapse(image=img))
    res["unknown_synapse"] = await call(a, port, FooSynapse(image=img))
    res["blacklisted"] = await call(a, port, ImageSynapse(image=img), dend=bt.Dendrite(wallet=stranger))
    res["b_only_allows_validator"] = await call(b, port, ImageSynapse(image=img), dend=bt.Dendrite(wallet=stranger))

    # one validator call to several axons at once: two hotkeys on one port and one pinned
    out = await den(
        axons=[axon_info(a, port), axon_info(b, port), axon_info(c, pinned)],
        synapse=ImageSynapse(image=img),
        timeout=9,
        deserialize=False,
    )
    res["multi_axon"] = [summary(o) for o in out]

    # signed for miner-a, then for miner-b (increasing nonces, one uuid), delivered b first:
    # the nonce table is per miner hotkey, so both are answered
    first = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    second = den.preprocess_synapse_for_request(axon_info(b, port), ImageSynapse(image=img), 9.0)
    assert first.dendrite.nonce < second.dendrite.nonce and first.dendrite.uuid == second.dendrite.uuid
    res["out_of_order"] = {"later_signed": raw(port, second)[0], "earlier_signed": raw(port, first)[0]}

    # a throw-away key floods miner-a with validly signed requests (future nonces, fresh
    # uuids): refused at admission, it leaves no nonce state, and the validator is served after
    flood = bt.Dendrite(wallet=stranger)
    codes = {}
    for i in range(300):
        syn = flood.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=""), 9.0)
        syn.dendrite.nonce = time.time_ns() + (i + 1) * 10**9
        syn.dendrite.uuid = f"{i:064d}"
        msg = f"{syn.dendrite.nonce}.{syn.dendrite.hotkey}.{syn.axon.hotkey}.{syn.dendrite.uuid}.{syn.body_hash}"
        syn.dendrite.signature = f"0x{stranger.hotkey.sign(msg).hex()}"
        code = raw(port, syn)[0]
        codes[str(code)] = codes.get(str(code), 0) + 1
    res["stranger_flood"] = {"codes": codes, "validator_after": (await call(a, port, ImageSynapse(image=img)))["dendrite_status"]}

    # a signed request whose body is refused spends no nonce: the same headers with a good
    # body are then answered (the body is not covered by the signature)
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=""), 9.0)
    refused = raw(port, syn)[0]
    syn.image = img
    res["nonce_after_bad_body"] = {"bad_body": refused, "same_nonce_good_body": raw(port, syn)[0]}

    # a hotkey that admits any signature takes nonces at most two minutes ahead
    far = bt.Dendrite(wallet=stranger)
    ahead = {}
    for label, minutes in (("58_min", 58), ("1_min", 1)):
        syn = far.preprocess_synapse_for_request(axon_info(c, pinned), ImageSynapse(image=img), 9.0)
        syn.dendrite.nonce = time.time_ns() + minutes * 60 * 10**9
        msg = f"{syn.dendrite.nonce}.{syn.dendrite.hotkey}.{syn.axon.hotkey}.{syn.dendrite.uuid}.{syn.body_hash}"
        syn.dendrite.signature = f"0x{stranger.hotkey.sign(msg).hex()}"
        s, body = raw(pinned, syn)
        ahead[label] = {"status": s, "message": body.get("message")}
    res["open_hotkey_future_nonce"] = ahead

    # replay: the same signed request twice
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    first = raw(port, syn)
    second = raw(port, syn)
    res["replay"] = {"first": first[0], "second": second[0], "message": second[1].get("message")}

    # a nonce from before the window, properly signed
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    syn.dendrite.nonce = time.time_ns() - 60 * 10**9
    msg = f"{syn.dendrite.nonce}.{syn.dendrite.hotkey}.{syn.axon.hotkey}.{syn.dendrite.uuid}.{syn.body_hash}"
    syn.dendrite.signature = f"0x{v.hotkey.sign(msg).hex()}"
    s, body = raw(port, syn)
    res["stale_nonce"] = {"status": s, "message": body.get("message")}

    # a signature by someone else's key
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    syn.dendrite.signature = f"0x{stranger.hotkey.sign('x').hex()}"
    s, body = raw(port, syn)
    res["bad_signature"] = {"status": s, "message": body.get("message")}

    # no signature at all (the SDK's axon would skip verification)
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    syn.dendrite.signature = ""
    s, body = raw(port, syn)
    res["unsigned"] = {"status": s, "message": body.get("message")}

    # signed for miner-a, sent to miner-b's address
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    syn.axon.hotkey = b.hotkey.ss58_address
    s, body = raw(port, syn)
    res["signed_for_another_axon"] = {"status": s, "message": body.get("message")}

    # body-level bad input behind a valid signature: wrong types, and an image that is not one
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    body = syn.model_dump()
    body["image"] = 12345
    headers = {k: str(v) for k, v in syn.to_headers().items()}
    headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/ImageSynapse", data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        urllib.request.urlopen(req, timeout=20)
        res["wrong_types"] = {"status": 200}
    except urllib.error.HTTPError as e:
        res["wrong_types"] = {"status": e.code, "message": json.loads(e.read()).get("message")}
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image="aGVsbG8gd29ybGQ="), 9.0)
    s, body = raw(port, syn)
    res["not_an_image"] = {"status": s, "message": body.get("message")}

    # a GET works too
    syn = den.preprocess_synapse_for_request(axon_info(a, port), ImageSynapse(image=img), 9.0)
    body = json.dumps(syn.model_dump()).encode()
    headers = {k: str(v) for k, v in syn.to_headers().items()}
    headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/ImageSynapse", data=body, headers=headers, method="GET")
    with urllib.request.urlopen(req, timeout=20) as r:
        res["get"] = {"status": r.status, "prediction": json.loads(r.read()).get("prediction")}
    await den.aclose_session() if hasattr(den, "aclose_session") else None
    print(json.dumps(res))


async def admission(d, spec):
    miner = wallet(d, spec["miner"])
    res = {}
    for name in spec["callers"]:
        den = bt.Dendrite(wallet=wallet(d, name))
        out = await den(axons=[axon_info(miner, spec["port"])], synapse=ImageSynapse(image=spec["image"]), timeout=9, deserialize=False)
        res[name] = summary(out[0])
    print(json.dumps(res))


async def batches(d, spec):
    """Validator-style load: SPEC["n"] batches at once, each signing for both miners. Each batch
    comes from its own dendrite (its own uuid), as concurrent challenges come from different
    validators: one dendrite's nonces to one axon must arrive in order, for the Python axon too."""
    v = wallet(d, "validator")
    dens = [bt.Dendrite(wallet=v) for _ in range(spec["n"])]
    axons = [axon_info(wallet(d, "miner-a"), spec["port"]), axon_info(wallet(d, "miner-b"), spec["port"])]
    started = time.time()
    outs = await asyncio.gather(
        # a generous client timeout: what is tested is that the server answers every request
        # (a loaded 2-core test machine runs 200 Python dendrites slower than a validator does)
        *[den(axons=axons, synapse=ImageSynapse(image=spec["image"]), timeout=spec.get("timeout", 9), deserialize=False) for den in dens]
    )
    statuses = {}
    bad = []
    for out in outs:
        for o in out:
            code = o.dendrite.status_code
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            if code != 200 or not (0.0 <= o.prediction <= 1.0):
                bad.append(summary(o))
    print(json.dumps({"answers": sum(len(o) for o in outs), "statuses": statuses, "bad": bad[:5], "s": time.time() - started}))


def main():
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "wallets":
        make_wallets(d)
    elif mode == "admission":
        asyncio.run(admission(d, json.loads(sys.argv[3])))
    elif mode == "batches":
        asyncio.run(batches(d, json.loads(sys.argv[3])))
    else:
        asyncio.run(scenarios(d, json.loads(sys.argv[3])))


if __name__ == "__main__":
    main()
