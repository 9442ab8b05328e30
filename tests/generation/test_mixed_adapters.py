"""One batch, several users' LoRA adapters (peft `adapter_names`), greedy and beam search: each row
equals that user's adapter generating alone."""

from __future__ import annotations

import pytest
import torch

from personadlg.config import GenerateConfig
from personadlg.models.decoding import generate_ids


@pytest.fixture
def two_adapters(tiny_gpt2_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True
    )
    model = get_peft_model(base, lora, adapter_name="u1")
    model.add_adapter("u2", lora)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (adapter = base); make the users differ
            torch.nn.init.normal_(p, std=0.5)
    return model.eval()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_mixed_adapter_batch_equals_each_adapter_alone(two_adapters, num_beams):
    model = two_adapters
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (3, 6))
    mask = torch.ones_like(ids)
    cfg = GenerateConfig(max_new_tokens=6, num_beams=num_beams, min_new_tokens=6)
    users = ["u1", "u2", "u1"]
    mixed = generate_ids(
        model,
        ids,
        mask,
        cfg=cfg,
        seeds=[0, 0, 0],
        pad_token_id=0,
        eos_token_id=None,
        adapter_names=users,
    )
    for row, user in enumerate(users):
        model.set_adapter(user)
        alone = generate_ids(
            model,
            ids[row : row + 1],
            mask[row : row + 1],
            cfg=cfg,
            seeds=[0],
            pad_token_id=0,
            eos_token_id=None,
        )
        assert torch.equal(mixed[row], alone[0]), (num_beams, row, user)
    assert not torch.equal(mixed[0], mixed[1])  # the two users' adapters differ
