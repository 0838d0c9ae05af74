"""Results as the JSON objects of SPEC ("JSON output")."""
from __future__ import annotations

import json

from ..values import to_json


def node_dicts(res, with_grad=False):
    graph, values = res.graph, res.values
    out = []
    for i in res.order:
        node = graph.nodes[i]
        v = values[i]
        d = {"id": i, "name": node.name, "op": node.op.name, "inputs": list(node.inputs),
             "value": to_json(v), "shape": list(getattr(v, "shape", ())),
             "text": graph.source(i)}
        if with_grad:
            g = res.grads[i]
            d["grad"] = None if g is None else to_json(g)
        out.append(d)
    return out


def evaluation(res, with_grad=False):
    value = res.values[res.output]
    return {"output": res.output_name, "value": to_json(value),
            "shape": list(getattr(value, "shape", ())),
            "nodes": node_dicts(res, with_grad=with_grad)}


def gradients(res):
    d = evaluation(res, with_grad=True)
    d["gradients"] = {name: to_json(g) for name, g in res.gradients.items()}
    return d


def dumps(obj):
    return json.dumps(obj, allow_nan=False)


def evaluation_text(res, **options):
    return dumps(evaluation(res))


def gradients_text(res, **options):
    return dumps(gradients(res))
