"""The computational graph: source nodes (variables, constants) and op nodes.

Nodes are numbered in the order the parser makes them, and a node is only made after its
inputs, so that numbering is already a topological order: the forward pass walks it up, the
reverse pass walks it down, and neither needs a sort or any recursion.
"""
from __future__ import annotations

from .ops import VAR


class Node:
    """One vertex: an op applied to earlier nodes (by id), or a variable, or a constant."""

    __slots__ = ("id", "op", "inputs", "params", "name", "value", "start", "end")

    def __init__(self, id, op, inputs=(), params=(), name=None, value=None, start=0, end=0):
        self.id = id
        self.op = op
        self.inputs = inputs      # ids of the input nodes, in argument order
        self.params = params      # static arguments (an axis, an index key)
        self.name = name          # the variable's or statement's name, if any
        self.value = value        # a constant's value
        self.start = start        # where the node's text lies in the program
        self.end = end

    def __repr__(self):
        return f"Node({self.id}, {self.op.name}, inputs={self.inputs}, name={self.name!r})"


class Graph:
    """A parsed program: its nodes, the names it binds and which node is its output."""

    def __init__(self, text, nodes, names, output, output_name, warnings=None):
        self.text = text
        self.nodes = nodes
        # every statement name and variable -> node id; a name assigned again maps to its
        # newest value, and its later versions are there too as "a#2", "a#3", ...
        self.names = names
        self.output = output            # id of the last statement's node
        self.output_name = output_name
        # what the parser has to say about the program (a constant's name assigned), for
        # the commands to print on stderr
        self.warnings = list(warnings or ())

    @property
    def variables(self):
        """Input variable name -> node id, in the order they first appear in the program
        (only the inputs: a name bound as an input and assigned later is still here)."""
        return {n.name: n.id for n in self.nodes if n.op is VAR}

    def ancestors(self, output):
        """Ids of the nodes ``output`` depends on (itself included), in topological order."""
        nodes = self.nodes
        needed = bytearray(output + 1)
        needed[output] = 1
        for i in range(output, -1, -1):  # ids are topological: one sweep down marks them all
            if needed[i]:
                for j in nodes[i].inputs:
                    needed[j] = 1
        return [i for i in range(output + 1) if needed[i]]

    def source(self, i, limit=None):
        """The program text node ``i`` was made from, on one line."""
        node = self.nodes[i]
        text = " ".join(self.text[node.start:node.end].split())
        if limit and len(text) > limit:
            text = text[:limit - 1] + "…"
        return text

    def label(self, i, limit=24):
        """How tables and messages name node ``i``: its name, else its text, else ``#i``."""
        node = self.nodes[i]
        if node.name:
            return node.name
        return self.source(i, limit) or f"#{i}"
