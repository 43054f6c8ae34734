"""One client's LoRA training pass, with and without DP-SGD (fedsim.algorithms.lora_training)."""
import numpy as np
import pytest

from fedsim.algorithms.base import ClientContext
from fedsim.algorithms.lora_training import train_adapter
from fedsim.config import validate
from fedsim.data.task import generate_examples
from fedsim.models.lora import LoraSettings, attach_lora, get_adapter
from fedsim.models.presets import build_model
from fedsim.models.tokenizer import builtin_tokenizer


@pytest.mark.parametrize("noise_multiplier", [None, 0.5])
def test_the_returned_adapter_is_the_trained_one(noise_multiplier):
    privacy = {} if noise_multiplier is None else {"dp_sgd": {"noise_multiplier": noise_multiplier}}
    config = validate({"clients": {"presets": {"llama-0.3m": 1}}, "train": {"local_steps": 3, "batch_size": 4},
                       "privacy": privacy})
    tokenizer = builtin_tokenizer()
    model = attach_lora(build_model("llama-0.3m", tokenizer, 0), LoraSettings(r=4))
    start = get_adapter(model)
    ctx = ClientContext(client=0, round_index=0, config=config, preset="llama-0.3m",
                        examples=generate_examples(8, 0, "train"), downloads=[], state={}, model=model,
                        tokenizer=tokenizer, dp_noise_multiplier=noise_multiplier)
    trained, stats = train_adapter(ctx, start)
    assert stats.steps == 3
    assert any(not np.array_equal(trained[name], start[name]) for name in start)  # training moved it ...
    assert all(np.array_equal(trained[name], now) for name, now in get_adapter(model).items())  # ... and it is returned
