"""Base classifiers: ONNX → frozen backbone + trainable PyTorch head → ONNX again.

All three base models (MiniFASNetV2, MiniFASNetV1SE, faceantispoof_minifas) end the same way:

    ... → Conv 1x1 128→512 ("expand") → PRelu → depthwise Conv kxk ("dw", k = 5 or 8) → flatten
        → MatMul 512→128 ("linear") → BatchNormalization → MatMul 128→n_out → logits

`Base` cuts the graph at the input of a chosen head layer (`start`). The part before the cut is
frozen: it runs in onnxruntime (exactly the shipped weights, and faster on CPU than a converted
copy) and its outputs are cached as features. The part after the cut is rebuilt as the small
PyTorch `Head` below, whose weights are ordinary trainable parameters initialised from the ONNX
initialisers, so an untrained head reproduces the base model exactly. (onnx2torch, used for the
end-to-end check in `check_export`, keeps PRelu slopes and MatMul weights as buffers; the head
does not depend on it.)

Export writes the trained head weights back into a copy of the base ONNX graph: same operators,
same preprocessing, static input [1,3,S,S] named `input`, output `output`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

HEAD_STARTS = ("expand", "dw", "linear")


def tensor_from_crops(crops: np.ndarray, spec: dict) -> np.ndarray:
    """RGB uint8 crops [N,S,S,3] → the member's input tensor [N,3,S,S] (float32), as livecheck
    builds it: channels in `spec["channels"]` order, value = (pixel * scale - mean[c]) / std[c]."""
    x = crops.astype(np.float32)
    if spec["channels"] == "bgr":
        x = x[..., ::-1]
    x = (x * np.float32(spec["scale"]) - np.asarray(spec["mean"], np.float32)) / np.asarray(
        spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def logit_real(logits, real_index: int):
    """ln(p_real / (1 - p_real)) of softmax(logits), stably: z_r - logsumexp(z_others).
    Works on torch tensors and numpy arrays [N, n_out]."""
    if isinstance(logits, np.ndarray):
        return logit_real(torch.from_numpy(logits), real_index).numpy()
    if logits.shape[1] == 1:
        return logits[:, 0]
    others = torch.cat([logits[:, :real_index], logits[:, real_index + 1:]], dim=1)
    return logits[:, real_index] - torch.logsumexp(others, dim=1)


def _param(a) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(a, np.float32)))


class Head(nn.Module):
    """[expand 1x1 + PReLU] → [depthwise kxk] → flatten → linear → BatchNorm (eval) → classifier.

    `start` says which layers are present (and trained). BatchNorm keeps its running statistics
    fixed (buffers) and trains only gamma/beta, i.e. it is the affine map it is at inference.
    """

    def __init__(self, w: dict[str, np.ndarray], start: str, dropout: float = 0.0):
        super().__init__()
        self.start = start
        if start == "expand":
            self.expand_w, self.expand_b = _param(w["expand_w"]), _param(w["expand_b"])
            self.prelu = _param(w["prelu"])
        if start in ("expand", "dw"):
            self.dw_w, self.dw_b = _param(w["dw_w"]), _param(w["dw_b"])
        self.linear = _param(w["linear"])  # [512, 128], as the ONNX MatMul stores it
        self.bn_gamma, self.bn_beta = _param(w["bn_gamma"]), _param(w["bn_beta"])
        self.register_buffer("bn_mean", torch.from_numpy(np.array(w["bn_mean"], np.float32)))
        self.register_buffer("bn_var", torch.from_numpy(np.array(w["bn_var"], np.float32)))
        self.bn_eps = float(w["bn_eps"])
        self.classifier = _param(w["classifier"])  # [128, n_out]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 and the depthwise convolutions are written as a matrix product and a weighted
        # sum over positions: the same arithmetic, several times faster on CPU than conv2d here.
        if self.start in ("expand", "dw"):
            x = torch.flatten(x, 2)  # [N, C, k*k]
        if self.start == "expand":
            x = torch.einsum("ncp,oc->nop", x, self.expand_w[:, :, 0, 0]) + self.expand_b[:, None]
            x = torch.where(x >= 0, x, x * self.prelu.view(1, -1, 1))
        if self.start in ("expand", "dw"):
            x = (x * torch.flatten(self.dw_w, 1)).sum(2) + self.dw_b
        x = torch.flatten(x, 1) @ self.linear
        x = (x - self.bn_mean) / torch.sqrt(self.bn_var + self.bn_eps) * self.bn_gamma + self.bn_beta
        return self.drop(x) @ self.classifier

    def weights(self) -> dict[str, np.ndarray]:
        """The trained weights, by ONNX role (for `Base.export`)."""
        return {k: v.detach().numpy().copy() for k, v in self.named_parameters()}


class Base:
    """One base ONNX classifier cut at the input of its `start` head layer."""

    def __init__(self, onnx_path: str | Path, start: str = "expand", threads: int = 2):
        if start not in HEAD_STARTS:
            raise ValueError(f"head start {start!r} not in {HEAD_STARTS}")
        self.path, self.start = Path(onnx_path), start
        self.model = onnx.load(str(onnx_path))
        g = self.model.graph
        init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        prod = {o: n for n in g.node for o in n.output}

        def back(tensor: str, *ops: str):
            node = prod[tensor]
            if node.op_type not in ops:
                raise ValueError(f"{onnx_path}: expected {ops} before {tensor}, got {node.op_type}")
            return node

        classifier = back(g.output[0].name, "MatMul")
        bn = back(classifier.input[0], "BatchNormalization")
        linear = back(bn.input[0], "MatMul")
        flat = back(linear.input[0], "Flatten", "Reshape")  # faceantispoof: Shape/.../Reshape
        dw = back(flat.input[0], "Conv")
        prelu = back(dw.input[0], "PRelu")
        expand = back(prelu.input[0], "Conv")
        # role → ONNX initialiser name
        self.roles = {
            "expand_w": expand.input[1], "expand_b": expand.input[2], "prelu": prelu.input[1],
            "dw_w": dw.input[1], "dw_b": dw.input[2], "linear": linear.input[1],
            "bn_gamma": bn.input[1], "bn_beta": bn.input[2], "bn_mean": bn.input[3],
            "bn_var": bn.input[4], "classifier": classifier.input[1],
        }
        self.weights = {role: init[name] for role, name in self.roles.items()}
        self.weights["bn_eps"] = next(a.f for a in bn.attribute if a.name == "epsilon")
        self.size = g.input[0].type.tensor_type.shape.dim[2].dim_value
        self.n_out = self.weights["classifier"].shape[1]
        self.cut = {"expand": expand.input[0], "dw": dw.input[0], "linear": linear.input[0]}[start]
        backbone = onnx.utils.Extractor(self.model).extract_model([g.input[0].name], [self.cut])
        for v in list(backbone.graph.input) + list(backbone.graph.output):
            if v.type.tensor_type.shape.dim:
                v.type.tensor_type.shape.dim[0].dim_param = "N"  # batched feature extraction
        del backbone.graph.value_info[:]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(backbone.SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = g.input[0].name

    def features(self, x: np.ndarray) -> np.ndarray:
        """Frozen backbone: input tensor [N,3,S,S] → features at the cut."""
        return self.session.run([self.cut], {self.input_name: x})[0]

    def new_head(self, dropout: float = 0.0) -> Head:
        return Head(self.weights, self.start, dropout)

    def export(self, head: Head, path: Path) -> dict:
        """A copy of the base graph with the head's weights, input fixed to [1,3,S,S].
        Returns {bytes, sha256}."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        g = m.graph
        trained = head.weights()
        by_name = {i.name: i for i in g.initializer}
        for role, value in trained.items():
            name = self.roles[role]
            want = by_name[name]
            arr = value.reshape(numpy_helper.to_array(want).shape).astype(np.float32)
            want.CopyFrom(numpy_helper.from_array(arr, name))
        for v in list(g.input) + list(g.output):
            v.type.tensor_type.shape.dim[0].ClearField("dim_param")
            v.type.tensor_type.shape.dim[0].dim_value = 1
        del g.value_info[:]  # stale symbolic batch sizes; runtimes infer shapes
        onnx.checker.check_model(m)
        data = m.SerializeToString()
        path.write_bytes(data)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_export(base: Base, head: Head, path: Path, x: np.ndarray, tol: float = 1e-4) -> float:
    """End-to-end check of an exported classifier on real input tensors `x` [N,3,S,S]: the file in
    onnxruntime, one image at a time as served, against PyTorch (the base converted by onnx2torch
    for the backbone + the trained head). Returns the max abs logit difference; raises above tol."""
    import onnx2torch

    backbone = onnx2torch.convert(onnx.utils.Extractor(base.model).extract_model(
        [base.input_name], [base.cut])).eval()
    with torch.no_grad():
        ref = head.eval()(backbone(torch.from_numpy(x))).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["output"], {"input": x[i:i + 1]})[0] for i in range(len(x))])
    diff = float(np.abs(got - ref).max())
    if not diff <= tol:
        raise RuntimeError(f"{path.name}: onnxruntime differs from PyTorch by {diff:.2e} > {tol}")
    return diff


def file_digest(path: Path) -> dict:
    data = Path(path).read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
