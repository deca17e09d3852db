#!/usr/bin/env python3
"""Evaluates deploy/admission-policy.yaml's CEL offline (cel-python) against requests the
agent and others make: the agent may change only its own Node's wireguard annotations."""
import copy
import pathlib
import sys

import celpy
import yaml

POLICY = pathlib.Path(__file__).resolve().parent.parent / "admission-policy.yaml"
AGENT = "system:serviceaccount:semaphore-wireguard:semaphore-wireguard"


def node(name, annotations=None, labels=None, pod_cidr="10.2.1.0/24"):
    meta = {"name": name, "annotations": annotations or {}, "labels": labels or {}}
    return {"metadata": meta, "spec": {"podCIDR": pod_cidr}}


def evaluate(policy, user, extra, old, new):
    """None when the policy does not apply, else the list of failed messages."""
    env = celpy.Environment()
    act = {
        "request": celpy.json_to_cel({"userInfo": {"username": user, "extra": extra}}),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }
    run = lambda expr, a: env.program(env.compile(expr)).evaluate(a)  # noqa: E731
    for cond in policy["spec"].get("matchConditions", []):
        if not run(cond["expression"], act):
            return None
    variables = celpy.celtypes.MapType()
    for v in policy["spec"].get("variables", []):
        act["variables"] = variables
        variables[celpy.celtypes.StringType(v["name"])] = run(v["expression"], act)
    act["variables"] = variables
    return [val["message"] for val in policy["spec"]["validations"] if not run(val["expression"], act)]


def main():
    docs = list(yaml.safe_load_all(POLICY.read_text()))
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    on = {"authentication.kubernetes.io/node-name": ["aws1"]}
    base = node("aws1", {"other": "x", "gcp.wireguard.semaphore.uw.io/pubKey": "old"})
    ours = copy.deepcopy(base)
    ours["metadata"]["annotations"]["gcp.wireguard.semaphore.uw.io/pubKey"] = "new"
    ours["metadata"]["annotations"]["gcp.wireguard.semaphore.uw.io/endpoint"] = "1.2.3.4:51820"
    other_ann = copy.deepcopy(base)
    other_ann["metadata"]["annotations"]["other"] = "changed"
    dropped = copy.deepcopy(base)
    del dropped["metadata"]["annotations"]["other"]
    relabel = copy.deepcopy(base)
    relabel["metadata"]["labels"]["role"] = "gateway"
    respec = copy.deepcopy(base)
    respec["spec"]["podCIDR"] = "10.2.9.0/24"
    fake = copy.deepcopy(base)
    fake["metadata"]["annotations"]["evil.wireguard.semaphore.uw.io.attacker.example/x"] = "y"
    other_node = node("aws2", {"gcp.wireguard.semaphore.uw.io/pubKey": "old"})
    other_node_new = copy.deepcopy(other_node)
    other_node_new["metadata"]["annotations"]["gcp.wireguard.semaphore.uw.io/pubKey"] = "evil"
    cases = [
        ("the agent changes its own node's wireguard annotations", AGENT, on, base, ours, True),
        ("the agent changes another annotation", AGENT, on, base, other_ann, False),
        ("the agent removes another annotation", AGENT, on, base, dropped, False),
        ("the agent changes a label", AGENT, on, base, relabel, False),
        ("the agent changes the spec", AGENT, on, base, respec, False),
        ("a key that only looks like ours", AGENT, on, base, fake, False),
        ("the agent changes another node", AGENT, on, other_node, other_node_new, False),
        ("a token without the node's name", AGENT, {}, base, ours, False),
        ("someone else changes anything", "system:admin", {}, base, other_ann, True),
    ]
    failed = 0
    for what, user, extra, old, new, allowed in cases:
        msgs = evaluate(policy, user, extra, old, new)
        got = msgs is None or not msgs
        status = "ok  " if got == allowed else "FAIL"
        failed += got != allowed
        print(f"{status} {what}: {'allowed' if got else 'denied ' + str(msgs)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
