"""`push_to_hub` through `Trainer`, offline: a recording Hub API stands in for the Hub and keeps what it commits."""

import io
import zipfile
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl
from transformers import Trainer, TrainingArguments
from transformers.utils import hub as transformers_hub

import hf_heads
from hf_heads.hub import use_model_card


class RecordingHubApi(HfApi):
    """
    The Hub API `Trainer` uses (`transformers.utils.hub.hf_api()`), minus the network: `upload_folder` selects the
    files with huggingface_hub's own code (the same ignore patterns, the same README metadata check, done locally)
    and records what the commit would carry.
    """

    def __init__(self):
        super().__init__(endpoint="https://hub.invalid", token="hf_offline_token")
        self.commits: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://hub.invalid/{repo_id}", endpoint="https://hub.invalid")

    def _validate_yaml(self, content, **kwargs):
        ModelCard(content)  # the Hub's check, locally: the front matter must parse as card metadata

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, ignore_patterns=None,
                      allow_patterns=None, run_as_future=False, **kwargs):
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS

        operations = self._prepare_upload_folder_additions(
            folder_path, path_in_repo or "", allow_patterns=allow_patterns,
            ignore_patterns=list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS,
        )
        files = {operation.path_in_repo: Path(operation.path_or_fileobj).read_bytes() for operation in operations}
        self.commits.append({"repo_id": repo_id, "message": commit_message, "files": files})
        if run_as_future:
            future = Future()
            future.set_result(None)
            return future
        return None


@pytest.fixture
def hub(monkeypatch):
    api = RecordingHubApi()
    monkeypatch.setattr(transformers_hub, "_hf_api", api)
    return api


def is_pickle(content: bytes) -> bool:
    """A pickle, or a torch archive (a zip holding one)."""
    if content[:1] == b"\x80":
        return True
    if content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return any(name.endswith(".pkl") for name in archive.namelist())
    return False


class Rows(torch.utils.data.Dataset):
    def __init__(self, count, seed):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 60, (count, 10), generator=generator)
        self.labels = torch.randint(0, 3, (count,), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": torch.ones(10, dtype=torch.long),
                "labels": self.labels[index]}


def tiny_trainer(output_dir, **arguments):
    config = hf_heads.GaamGPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16, num_labels=3,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=1, classifier_pooling="mean")
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, num_train_epochs=2, eval_strategy="epoch",
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, **arguments,
    )
    return Trainer(model=hf_heads.GaamGPT2ForSequenceClassification(config), args=args, train_dataset=Rows(16, 0),
                   eval_dataset=Rows(8, 1))


def test_push_keeps_the_package_card_and_uploads_nothing_pickled(hub, tmp_path):
    trainer = tiny_trainer(tmp_path / "tiny", push_to_hub=True, hub_model_id="someone/tiny", hub_strategy="end")
    card = use_model_card(trainer, dataset_name="toy-texts", license="apache-2.0", splits={"validation": "8 rows"})
    trainer.train()
    card.results["test"] = {"accuracy": 0.5, "macro_f1": 0.4}
    trainer.push_to_hub()

    [commit] = hub.commits
    files = commit["files"]
    assert commit["repo_id"] == "someone/tiny"
    assert {"config.json", "model.safetensors", "README.md", "loss_curves.png", "training_args.json",
            "modeling_gaam_gpt2.py", "configuration_gaam_gpt2.py", "gaam_layer.py"} <= set(files)
    pickled = [name for name, content in files.items() if is_pickle(content)]
    assert pickled == []
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)

    uploaded = ModelCard(files["README.md"].decode())
    assert uploaded.data.license == "apache-2.0"
    assert uploaded.data.pipeline_tag == "text-classification"
    assert "custom_code" in uploaded.data.tags and "gaam_gpt2" in uploaded.data.tags
    by_split = {(r.dataset_split, r.metric_name): r.metric_value for r in uploaded.data.eval_results}
    assert by_split[("test", "macro-F1")] == 0.4
    assert ("validation", "loss") in by_split  # from the trainer's last evaluation
    assert "trust_remote_code=True" in uploaded.text
    assert "![Loss curves](loss_curves.png)" in uploaded.text
    assert "More information needed" not in uploaded.text  # transformers' generic card
    # The local folder holds the same card: what was uploaded is what the user sees.
    assert (tmp_path / "tiny" / "README.md").read_bytes() == files["README.md"]


def test_a_plain_trainer_would_upload_a_pickle_and_its_own_card(hub, tmp_path):
    """What `use_model_card` prevents, recorded the same way (so the test above can fail)."""
    trainer = tiny_trainer(tmp_path / "plain", push_to_hub=True, hub_model_id="someone/plain", hub_strategy="end")
    trainer.train()
    trainer.push_to_hub(finetuned_from="gpt2")  # a Hub base model: the generic card does not look it up offline
    files = hub.commits[-1]["files"]
    assert is_pickle(files["training_args.bin"])


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_strategies_that_upload_during_training_are_refused_before_training(hub, tmp_path, strategy):
    trainer = tiny_trainer(tmp_path / "x", push_to_hub=True, hub_model_id="someone/x", hub_strategy=strategy)
    with pytest.raises(ValueError, match=f"`--hub_strategy`='{strategy}'.*--hub_strategy end"):
        use_model_card(trainer)
    assert hub.commits == []


def test_the_recipe_pushes_its_model_card_and_pictures_without_pickles(hub, tmp_path):
    from hf_heads.training import classification

    output_dir = tmp_path / "bbc-tiny"
    metrics = classification.main([
        "--model_type", "gaam_gpt2", "--config_overrides", "n_layer=1,n_embd=32,n_head=4,gaam_num_heads=2",
        "--tokenizer_vocab_size", "300", "--max_length", "32", "--dataset_name", "bbc_news",
        "--max_train_samples", "48", "--max_eval_samples", "24", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "16", "--report_to", "none", "--use_cpu", "true",
        "--save_strategy", "epoch", "--eval_strategy", "epoch",
        "--push_to_hub", "true", "--hub_model_id", "someone/bbc-tiny", "--hub_strategy", "end", "--license", "mit",
        "--output_dir", str(output_dir),
    ])
    [commit] = hub.commits
    files = commit["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "all_results.json", "loss_curves.png",
            "confusion_matrix.png", "gaam_importance.png", "training_args.json", "modeling_gaam_gpt2.py"} <= set(files)
    assert [name for name, content in files.items() if is_pickle(content)] == []
    assert not any(name.startswith(("checkpoint-", "_")) for name in files)  # neither checkpoints nor the run's lock
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "mit"
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("test", "accuracy")] == pytest.approx(metrics["test_accuracy"])
    assert results[("test", "macro-F1")] == pytest.approx(metrics["test_macro_f1"])
    assert ("validation", "accuracy") in results
    assert "held out as the validation split" in card.text  # the carved split is named for what it is


def test_a_model_without_a_known_pipeline_is_refused_when_the_card_is_attached(tmp_path):
    from transformers import GPT2Config, GPT2Model

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2)), args=args)
    with pytest.raises(ValueError, match="No pipeline tag is known for GPT2Model; pass `pipeline_tag=`"):
        use_model_card(trainer)
    assert use_model_card(trainer, pipeline_tag="feature-extraction").pipeline_tag == "feature-extraction"
