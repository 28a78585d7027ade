"""An ``onnx.backend.base.Backend`` that runs ONNX LSTM / GRU / RNN graphs with fastrnn.

Usage (the standard ONNX backend API)::

    import fastrnn.onnx_backend as backend
    rep = backend.prepare(model)            # ModelProto, path or bytes; device "CPU"
    outputs = rep.run([X, ...])             # or a dict name -> array
    outputs = backend.run_model(model, inputs)
    outputs = backend.run_node(node, inputs)

Supported graphs are made of ``LSTM``, ``GRU`` and ``RNN`` nodes (every
attribute of those ops, see :mod:`fastrnn._onnx`), plus ``Constant`` /
``Identity`` nodes and subgraphs that only depend on constants (folded once at
prepare time).  Weights may be initializers / constants (converted once at
prepare time) or graph inputs (the layer is then built at run time from the
fed arrays).  Optional outputs (empty names) are supported.  Any other op
raises :class:`UnsupportedOperatorError` (a ``NotImplementedError`` and a
``ValueError``) naming it.  Only the CPU device is supported.

This module needs the ``onnx`` package; ``import fastrnn`` alone never imports it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from ._onnx import (
    RECURRENT_OPS,
    OnnxRNN,
    _Graph,
    _is_default_domain,
    _load_model,
    _node_from_graph,
    _node_label,
)

__all__ = [
    "FastRNNBackend",
    "FastRNNBackendRep",
    "UnsupportedOperatorError",
    "prepare",
    "run_model",
    "run_node",
    "supports_device",
    "is_compatible",
]


class UnsupportedOperatorError(NotImplementedError, ValueError):
    """The graph contains an operator fastrnn.onnx_backend does not run."""


class _RecurrentStep:
    __slots__ = ("node", "inputs", "outputs", "dynamic")

    def __init__(self, node: OnnxRNN, dynamic: bool):
        self.node = node
        self.inputs = node.input_names  # slot -> tensor name ('' = absent)
        self.outputs = node.output_names
        self.dynamic = dynamic  # weights come from runtime values


def _check_device(device: str) -> None:
    if not FastRNNBackend.supports_device(device):
        raise ValueError(f"fastrnn.onnx_backend only runs on CPU, not on device {device!r}")


class FastRNNBackendRep(BackendRep):
    """A prepared graph: converted layers plus the order to run them in."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        g = _Graph(graph, model.opset_import, model.ir_version)
        self._graph = g
        init_names = {t.name for t in graph.initializer}
        self._init_names = init_names
        # Inputs fed by the caller, in order (initializers listed as inputs are defaults).
        self.input_names = [i.name for i in graph.input if i.name not in init_names]
        self._all_input_names = [i.name for i in graph.input]
        self.output_names = [o.name for o in graph.output]
        self._steps: list[Any] = []
        for node in g.nodes:
            op = node.op_type
            if not _is_default_domain(node):
                raise UnsupportedOperatorError(
                    f"fastrnn.onnx_backend: unsupported operator {node.domain}.{op} "
                    f"({_node_label(node)}); only LSTM, GRU and RNN are supported"
                )
            if op in RECURRENT_OPS:
                rnn = _node_from_graph(node, g, allow_dynamic=True)
                self._steps.append(_RecurrentStep(rnn, dynamic=rnn.layer is None))
            elif op == "Constant":
                continue  # already a constant of g
            elif op == "Identity":
                self._steps.append(("Identity", node.input[0], node.output[0]))
            else:
                # Constant-only subgraphs (e.g. weights assembled by Concat) are folded.
                if all(g.const(o) is not None for o in node.output if o):
                    continue
                raise UnsupportedOperatorError(
                    f"fastrnn.onnx_backend: unsupported operator {op} ({_node_label(node)}); "
                    "only LSTM, GRU and RNN nodes (plus Constant/Identity and constant "
                    "subgraphs) are supported"
                )

    # -- helpers ---------------------------------------------------------------
    def _feed(self, inputs) -> dict:
        if inputs is None:
            return {}
        if isinstance(inputs, dict):
            unknown = [k for k in inputs if k not in self._all_input_names]
            if unknown:
                raise ValueError(f"unknown input name(s) {unknown}; graph inputs: {self.input_names}")
            return {k: np.asarray(v) for k, v in inputs.items()}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) > len(self.input_names):
            raise ValueError(
                f"got {len(inputs)} inputs but the graph takes {len(self.input_names)}: {self.input_names}"
            )
        return {n: np.asarray(v) for n, v in zip(self.input_names, inputs)}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run the graph: ``inputs`` is a list (graph input order) or a dict name -> array."""
        fed = self._feed(inputs)
        g = self._graph
        # Initializers the caller feeds replace the stored ones, also in what is folded from them
        # (weights assembled by Concat, say); the steps that depend on them are rebuilt.
        over = {k: v for k, v in fed.items() if k in self._init_names}
        gv = g.with_values(over) if over else g

        def value(name):
            if not name:
                return None
            if name in env:
                return env[name]
            v = gv.const(name)
            if v is None:
                raise ValueError(f"no value for tensor {name!r}: feed graph input(s) {self.input_names}")
            return v

        env: dict[str, np.ndarray] = dict(fed)
        for step in self._steps:
            if isinstance(step, tuple):
                _, src, dst = step
                env[dst] = value(src)
                continue
            ins = step.inputs
            kw = {}
            # weights fed at run time (graph inputs, or initializers overridden by the caller)
            if step.dynamic or (over and any(g.depends_on(ins.get(s), over)
                                             for s in ("W", "R", "B", "P") if ins.get(s))):
                for slot in ("W", "R", "B", "P"):
                    if ins.get(slot):
                        kw[slot] = value(ins[slot])
            # Runtime values of sequence_lens / initial states; when the graph has them as
            # constants (or not at all), OnnxRNN uses its own stored defaults.
            opt = {}
            for slot in ("sequence_lens", "initial_h", "initial_c"):
                nm = ins.get(slot, "")
                if nm and (nm in env):
                    opt[slot] = env[nm]
                elif nm and over and g.depends_on(nm, over):
                    opt[slot] = value(nm)
                elif nm and g.const(nm) is None and not g.is_zero_fill(nm):
                    opt[slot] = value(nm)  # raises a clear error when missing
            results = step.node.run(value(ins["X"]), **opt, **kw)
            for slot, arr in zip(step.outputs, results):
                nm = step.outputs[slot]
                if nm:
                    env[nm] = arr
        missing = [n for n in self.output_names if n not in env and gv.const(n) is None]
        if missing:
            raise ValueError(f"graph output(s) {missing} are not computed by the graph")
        outs = [env[n] if n in env else gv.const(n) for n in self.output_names]
        return namedtupledict("Outputs", self.output_names)(*outs)


class FastRNNBackend(Backend):
    """ONNX backend running LSTM / GRU / RNN graphs on fastrnn's CPU kernels."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs: Any) -> bool:
        if not cls.supports_device(device):
            return False
        try:
            model, _ = _load_model(model)
            FastRNNBackendRep(model)
        except (ValueError, NotImplementedError):
            return False
        return True

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs: Any) -> FastRNNBackendRep:
        """Convert ``model`` (ModelProto, path or bytes) once; returns a BackendRep."""
        _check_device(device)
        model, src = _load_model(model)  # also runs onnx.checker
        try:
            return FastRNNBackendRep(model)
        except UnsupportedOperatorError:
            raise
        except ValueError as e:
            if src:
                raise ValueError(f"{src}: {e}") from None
            raise

    @classmethod
    def run_model(cls, model, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run one LSTM/GRU/RNN node; ``inputs`` align with ``node.input`` (or a dict)."""
        _check_device(device)
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        if node.op_type not in RECURRENT_OPS or not _is_default_domain(node):
            raise UnsupportedOperatorError(
                f"fastrnn.onnx_backend: unsupported operator {node.op_type} ({_node_label(node)})"
            )
        names = list(node.input)
        if isinstance(inputs, dict):
            feed = {k: np.asarray(v) for k, v in inputs.items() if v is not None}
        else:
            inputs = list(inputs)
            present = [n for n in names if n]
            if len(inputs) == len(names):
                pairs = zip(names, inputs)
            elif len(inputs) == len(present):
                pairs = zip(present, inputs)
            else:
                raise ValueError(
                    f"{_node_label(node)}: got {len(inputs)} inputs for node inputs {names}"
                )
            feed = {n: np.asarray(v) for n, v in pairs if n and v is not None}
        g = _Graph(onnx.helper.make_graph([], "run_node", [], []))
        rnn = _node_from_graph(node, g, allow_dynamic=True)
        ins = rnn.input_names
        kw = {s: feed.get(ins[s]) for s in ("W", "R", "B", "P") if ins.get(s)}
        opt = {s: feed.get(ins[s]) for s in ("sequence_lens", "initial_h", "initial_c") if ins.get(s)}
        if ins["X"] not in feed:
            raise ValueError(f"{_node_label(node)}: missing input X ({ins['X']!r})")
        results = rnn.run(feed[ins["X"]], **opt, **kw)
        out_names = [n for n in node.output if n]
        outs = [r for slot, r in zip(rnn.output_names, results) if rnn.output_names[slot]]
        return namedtupledict("Outputs", out_names)(*outs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except Exception:  # noqa: BLE001 - unparsable device string
            return False


prepare = FastRNNBackend.prepare
run_model = FastRNNBackend.run_model
run_node = FastRNNBackend.run_node
supports_device = FastRNNBackend.supports_device
is_compatible = FastRNNBackend.is_compatible
