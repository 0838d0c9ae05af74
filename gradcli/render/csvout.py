"""Results as CSV: a row per node (eval), a row per element of each gradient (grad)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np

from ..values import to_json


def _writer():
    buf = io.StringIO()
    return buf, csv.writer(buf, lineterminator="\n")


def _cell(v):
    v = to_json(v)
    return json.dumps(v) if isinstance(v, list) else v


def evaluation(res, **options):
    """id,name,op,inputs,shape,value: inputs are space-separated ids, arrays JSON lists."""
    buf, w = _writer()
    w.writerow(["id", "name", "op", "inputs", "shape", "value"])
    for i in res.order:
        node = res.graph.nodes[i]
        v = np.asarray(res.values[i])
        w.writerow([i, node.name or "", node.op.name, " ".join(map(str, node.inputs)),
                    "x".join(map(str, v.shape)), _cell(v)])
    return buf.getvalue()


def gradients(res, **options):
    """variable,index,value,gradient: one row per element, index like 0,1 (empty: scalar).

    The first rows are the output itself: its value, and as its gradient the seed the
    reverse pass started from (d f/d f = 1, or --upstream); then each input's rows.
    """
    buf, w = _writer()
    w.writerow(["variable", "index", "value", "gradient"])
    out = np.asarray(res.values[res.output])
    seed = res.grads[res.output] if getattr(res, "grads", None) is not None and \
        res.grads[res.output] is not None else np.ones(out.shape)
    _rows(w, res.output_name, out, np.broadcast_to(seed, out.shape))
    for name, g in res.gradients.items():
        i = res.graph.names[name]
        value = res.values[i] if i < len(res.values) and res.values[i] is not None else np.nan
        _rows(w, name, np.broadcast_to(value, g.shape), g)
    return buf.getvalue()


def _rows(w, name, value, grad):
    index = [",".join(map(str, t)) for t in np.ndindex(grad.shape)]
    w.writerows(zip([name] * grad.size, index, _flat(value), _flat(grad)))


def _flat(a):
    a = np.asarray(a).ravel()
    return to_json(a)
