"""Method `lora`: user-specific dialogue with a profile-aware base model and one peft LoRA adapter
per user (arXiv 2409.00887). Stage `base` trains the LM with the user's profile in the prompt;
stage `users` trains each user's adapter on the frozen base; generation picks the adapter by the
example's `user_id`, mixing users in one batch."""

from personadlg.models.base import MethodSpec
from personadlg.models.lora.config import LoRAFinetuneConfig
from personadlg.models.lora.model import LoraModel, build, load

SPEC = MethodSpec(
    name="lora",
    config_cls=LoRAFinetuneConfig,
    build=build,
    load=load,
    model_cls=LoraModel,
    description="profile-aware base model + one peft LoRA adapter per user",
    supports=("profile", "user"),
    stages=("base", "users"),
    stage_runners={"users": "personadlg.training.user_adapters:train_users"},
)

__all__ = ["SPEC", "LoRAFinetuneConfig", "LoraModel"]
