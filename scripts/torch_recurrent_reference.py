#!/usr/bin/python3
"""Reference outputs from PyTorch for espresso's LSTM, GRU and RNN import.

Exports nn.LSTM, nn.GRU and nn.RNN (one and two layers, uni- and bidirectional, batch_first on and off)
to ONNX with fixed weights and inputs, and saves PyTorch's own outputs beside each model in ONNX's
backend-test layout (OUT/<name>/model.onnx, OUT/<name>/test_data_set_0/{input,output}_<k>.pb), which
`espresso onnx-test` and tests/test_onnx_recurrent.cpp read.

Usage: scripts/torch_recurrent_reference.py OUT_DIR      (Debian's python3-torch and python3-onnx)
"""
import sys
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

# name, module, layers, bidirectional, batch_first, extra constructor arguments
CASES = [
    ("lstm_1layer", torch.nn.LSTM, 1, False, False, {}),
    ("lstm_2layer_bidirectional_batch_first", torch.nn.LSTM, 2, True, True, {}),
    ("lstm_2layer_batch_first", torch.nn.LSTM, 2, False, True, {}),
    ("gru_1layer_bidirectional", torch.nn.GRU, 1, True, False, {}),
    ("gru_2layer_bidirectional_batch_first", torch.nn.GRU, 2, True, True, {}),
    ("gru_2layer", torch.nn.GRU, 2, False, False, {}),
    ("rnn_tanh_2layer_bidirectional", torch.nn.RNN, 2, True, False, {}),
    ("rnn_relu_1layer_batch_first", torch.nn.RNN, 1, False, True, {"nonlinearity": "relu"}),
]
STEPS, BATCH, INPUT, HIDDEN = 7, 3, 5, 4


class Wrapper(torch.nn.Module):
    """Returns every output, states included, so the import of Y_h and Y_c is checked too."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        y, state = self.rnn(x)
        if isinstance(state, tuple):
            return (y,) + state
        return y, state


def save(tensor, path):
    path.write_bytes(numpy_helper.from_array(tensor.detach().numpy()).SerializeToString())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    for index, (name, module, layers, bidirectional, batch_first, extra) in enumerate(CASES):
        torch.manual_seed(100 + index)
        rnn = module(INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                     **extra)
        model = Wrapper(rnn).eval()
        x = torch.randn((BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT))
        with torch.no_grad():
            outputs = model(x)
        folder = out / name
        (folder / "test_data_set_0").mkdir(parents=True, exist_ok=True)
        names = ["y", "h_n"] + (["c_n"] if module is torch.nn.LSTM else [])
        torch.onnx.export(model, (x,), str(folder / "model.onnx"), input_names=["x"], output_names=names,
                          opset_version=14)
        onnx.checker.check_model(onnx.load(str(folder / "model.onnx")))
        save(x, folder / "test_data_set_0" / "input_0.pb")
        for k, value in enumerate(outputs):
            save(value, folder / "test_data_set_0" / f"output_{k}.pb")
        print(f"{name}: {len(outputs)} outputs")


if __name__ == "__main__":
    main()
