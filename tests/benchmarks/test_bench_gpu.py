"""The GPU benchmark's parts on the CPU: the model dir has Qwen3-Coder-30B-A3B's shape, and the
typists replay (bench/gpu_typists.py) drives real language servers against a real vLLM and
reports what each level of typists saw and cost."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.gpu import machine_key
from bench.vllm_process import MODEL_NAME, VllmServer

ROOT = Path(__file__).resolve().parents[2]
SMALL_CODER = ROOT.parent / "shared" / "models" / "small-coder-v2"


def test_model_dir_has_the_30b_a3b_shape_and_the_tokenizers_vocab(tmp_path: Path, test_model: Path) -> None:
    target = tmp_path / "model"
    subprocess.run([sys.executable, "-m", "bench.gpu", "model-dir", str(target),
                    "--tokenizer", str(test_model)], check=True, timeout=60, cwd=ROOT)
    config = json.loads((target / "config.json").read_text())
    shape = {key: config[key] for key in ("architectures", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                          "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
                                          "moe_intermediate_size")}
    assert shape == {"architectures": ["Qwen3MoeForCausalLM"], "num_hidden_layers": 48, "hidden_size": 2048,
                     "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
                     "num_experts_per_tok": 8, "moe_intermediate_size": 768}
    assert config["vocab_size"] == json.loads((test_model / "config.json").read_text())["vocab_size"]
    assert (target / "tokenizer.json").is_file()
    assert not list(target.glob("*.safetensors"))  # timing needs no weights: --load-format dummy


@pytest.mark.vllm
def test_typists_replay_through_real_servers(external_vllm: VllmServer, test_model: Path, tmp_path: Path) -> None:
    state = tmp_path / "vllm.json"
    state.write_text(json.dumps({"url": external_vllm.url, "key": external_vllm.api_key, "model": str(test_model),
                                 "name": MODEL_NAME}))
    out = tmp_path / "typists.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_typists", "--state", str(state), "--users", "1", "2",
         "--regions", "1", "--lines", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert external_vllm.api_key not in result.stdout + result.stderr + out.read_text()
    levels = json.loads(out.read_text())["levels"]
    assert [level["users"] for level in levels] == [1, 2]
    for level in levels:
        assert level["failed"] == []
        # every typist's region-end pause is answered, and the servers timed those completions
        assert level["pause_latency_ms"]["n"] >= level["users"]
        assert level["server_ms"]["total"]["n"] >= level["users"]
        assert level["vllm"]["requests"] >= level["users"] and level["vllm"]["prompt_tokens"] > 0
    assert "| 2 |" in result.stdout  # the table


@pytest.mark.vllm
def test_a_serve_cut_off_while_vllm_loads_leaves_it_to_the_next_call(test_model: Path, tmp_path: Path) -> None:
    """On the device machine a call that runs out kills `serve` while vLLM compiles (H100, 2026-12-06: the
    vLLM lived on, its key died with `serve`, and the next call had to dig the key out of /proc). The state
    file is written at spawn, so the next call waits for that vLLM and uses it; one key serves every start."""
    state, log = tmp_path / "g" / "vllm.json", tmp_path / "vllm.log"
    bench = [sys.executable, "-m", "bench.gpu"]
    serve = subprocess.Popen([*bench, "serve", "--model", str(test_model), "--state", str(state), "--log", str(log),
                              "--dtype", "float32", "--max-model-len", "512", "--vllm-arg=--enforce-eager",
                              "--env", "VLLM_CPU_KVCACHE_SPACE=1"], cwd=ROOT)
    try:
        for _ in range(600):
            if state.is_file() and state.read_text():
                break
            time.sleep(0.1)
        serve.terminate()  # the call's time limit, before vLLM is ready
        serve.wait(30)
        assert json.loads(state.read_text())["startup_s"] == -1  # written before ready
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        waited = subprocess.run([*bench, "wait", "--state", str(state), "--timeout", "300"], capture_output=True,
                                text=True, timeout=320, cwd=ROOT)
        assert waited.returncode == 0, waited.stderr + log.read_text()[-3000:]
        saved = json.loads(state.read_text())
        answer = httpx.post(saved["url"] + "/v1/completions", timeout=60,
                            headers={"Authorization": f"Bearer {saved['key']}"},
                            json={"model": "bench", "prompt": "def add(a, b):", "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["choices"]
        assert saved["key"] == machine_key()  # the next start gets the same key: vLLM 0.26 reuses its compilation
    finally:
        if state.is_file():
            subprocess.run([*bench, "stop", "--state", str(state)], timeout=60, cwd=ROOT, check=False)
    assert not state.exists()
