"""The `[candidate]` of a hotkey file `cascade tune` wrote, as the example's two steps need it:

    candidate.py stable TUNED OUT NAME   # a hotkey file NAME whose stable arm is the candidate
    candidate.py canary TUNED LIVE       # append it to LIVE as [candidate] with an evidence canary
"""
import json
import sys
import tomllib


def inline(v):
    """A value as inline TOML."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {inline(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(inline(x) for x in v) + "]"
    return json.dumps(v)


def main():
    mode, src, out = sys.argv[1:4]
    cand = tomllib.load(open(src, "rb"))["candidate"]
    if mode == "stable":
        lines = [f"name = {json.dumps(sys.argv[4])}"]
        for role, cfg in cand.items():
            lines += [f"[{role}]", f"component = {json.dumps(cfg['component'])}", f"params = {inline(cfg['params'])}"]
        open(out, "w").write("\n".join(lines) + "\n")
    else:
        # the live hotkey stays the stable arm; the tuned policy is the candidate
        t = open(out).read()
        t += "\n[candidate]\n" + "".join(f"{role} = {inline(cfg)}\n" for role, cfg in cand.items())
        t += '[rollout]\nmode = "canary"\nsteps = [50]\nmin_requests = 10\n'
        t += 'evidence = { report = "replay.json", min_mcc_gain = 0.0, min_labelled = 50 }\n'
        open(out, "w").write(t)


if __name__ == "__main__":
    main()
