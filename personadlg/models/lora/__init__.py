"""Method `lora`: user-specific dialogue with a profile-aware base model and one peft LoRA adapter
per user (arXiv 2409.00887). Stage `base` trains the LM with the user's profile in the prompt;
stage `users` trains each user's adapter on the frozen base (users.py); generation picks the
adapter by the example's `user_id`, mixing users in one batch."""

from personadlg.models.lora.adapters import list_adapters
from personadlg.models.lora.config import LoRAFinetuneConfig
from personadlg.models.lora.demo import DEMO
from personadlg.models.spec import Flag, Implementation, Listing, MethodSpec


def _implementation() -> Implementation:
    from personadlg.models.lora.model import LoraModel, build, load
    from personadlg.models.lora.users import train_users

    return Implementation(
        build=build, load=load, model_cls=LoraModel, stage_runners={"users": train_users}
    )


SPEC = MethodSpec(
    name="lora",
    description="profile-aware base model + one peft LoRA adapter per user (arXiv 2409.00887)",
    config_cls=LoRAFinetuneConfig,
    implementation=_implementation,
    supports=("profile", "user"),
    stages=("base", "users"),
    flags={
        "train": {
            "--users": Flag(
                value="IDS",
                override="model.users=[{}]",
                listed=True,
                quoted=True,
                help="train the adapters of these user ids only, e.g. u-001,u-007 (model.users)",
            ),
            "--users-file": Flag(
                value="FILE",
                override="model.users_file={}",
                quoted=True,
                help="the user ids to train, one per line (model.users_file)",
            ),
        },
    },
    listings={
        "adapters": Listing(
            help="the user adapters of a lora run: one row per user",
            argument="a lora run dir (or its final/)",
            read=list_adapters,
        )
    },
    demo=DEMO,
)

__all__ = ["SPEC", "LoRAFinetuneConfig"]
