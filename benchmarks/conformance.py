"""Does GAAM-GPT2 keep transformers' model contract? Measured with transformers' own tests.

Runs transformers' GPT-2 test class (`GPT2ModelTest`: `ModelTesterMixin`, `GenerationTesterMixin`, the causal-LM
tester, GPT-2's tester) three times in one pytest session: on GPT-2 itself, and with the GAAM-GPT2 classes swapped
into GPT-2's tester in "augment" and in "replace" mode (every block), GAAM's gates opened with `gaam_gate_init` so that
GAAM is active, and the GAAM-GPT2 class names added to the suite's model-name tables (which decide, e.g., which inputs
get labels). Writes
`results/conformance.md`: the totals of each run and every test whose outcome differs from GPT-2's, with the reason.

transformers' test files are not part of this repository. Pass a folder holding them: a checkout of the installed
release (`tests/` and `src/` side by side), or the closest copies to be had, laid out the same way; a `PATCHES.txt`
in that folder (where each file came from, what was changed) is copied into the report:

    python benchmarks/conformance.py --transformers-tests ~/src/transformers

Not part of the default test run (it needs that folder, and takes minutes).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
GPT2_TESTS = Path("tests/models/gpt2/test_modeling_gpt2.py")
RUNS = {"TestGPT2": "GPT-2", "TestGaamGPT2Augment": "GAAM-GPT2 augment", "TestGaamGPT2Replace": "GAAM-GPT2 replace"}
GATE_INIT = 0.5

# The module pytest runs: transformers' GPT-2 test class, once per model family. Kept as text because it must be
# imported with the transformers checkout on the path, in a process of its own.
TEST_MODULE = textwrap.dedent(
    f"""
    import hf_heads  # registers the GAAM-GPT2 classes with the Auto classes
    from hf_heads import (
        GaamGPT2Config,
        GaamGPT2ForQuestionAnswering,
        GaamGPT2ForSequenceClassification,
        GaamGPT2ForTokenClassification,
        GaamGPT2LMHeadModel,
        GaamGPT2Model,
    )
    from transformers.models.auto import modeling_auto

    from tests.models.gpt2 import test_modeling_gpt2 as gpt2


    # The suite reads these name tables (not the Auto classes) to decide, e.g., which classes get labels.
    for table, name in [
        (modeling_auto.MODEL_MAPPING_NAMES, "GaamGPT2Model"),
        (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "GaamGPT2LMHeadModel"),
        (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "GaamGPT2ForSequenceClassification"),
        (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES, "GaamGPT2ForTokenClassification"),
        (modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES, "GaamGPT2ForQuestionAnswering"),
    ]:
        table.setdefault("gaam_gpt2", name)


    class GaamGPT2Tester(gpt2.GPT2ModelTester):
        config_class = GaamGPT2Config
        base_model_class = GaamGPT2Model
        causal_lm_class = GaamGPT2LMHeadModel
        sequence_classification_class = GaamGPT2ForSequenceClassification
        token_classification_class = GaamGPT2ForTokenClassification
        question_answering_class = GaamGPT2ForQuestionAnswering
        # The tester passes its attributes named like config fields to the config.
        gaam_gate_init = {GATE_INIT!r}


    class AugmentTester(GaamGPT2Tester):
        gaam_placement = "augment"


    class ReplaceTester(GaamGPT2Tester):
        gaam_placement = "replace"


    PIPELINES = {{
        "feature-extraction": GaamGPT2Model,
        "question-answering": GaamGPT2ForQuestionAnswering,
        "text-classification": GaamGPT2ForSequenceClassification,
        "text-generation": GaamGPT2LMHeadModel,
        "token-classification": GaamGPT2ForTokenClassification,
        "zero-shot": GaamGPT2ForSequenceClassification,
    }}


    class TestGPT2(gpt2.GPT2ModelTest):
        pass


    class TestGaamGPT2Augment(gpt2.GPT2ModelTest):
        model_tester_class = AugmentTester
        pipeline_model_mapping = PIPELINES


    class TestGaamGPT2Replace(gpt2.GPT2ModelTest):
        model_tester_class = ReplaceTester
        pipeline_model_mapping = PIPELINES
        # No block keeps self-attention: transformers' declaration for attention-free models (Mamba, ConvNeXt, ...).
        has_attentions = False
    """
)

# Why a "replace" outcome differs from GPT-2's, where the suite's own message does not say it all.
NO_KEY_VALUE_STATE = "no block keeps key/value state, so the model returns no cache (never one of empty layers)"
ATTENTION_FREE = "every block's self-attention is replaced, and the test class declares `has_attentions = False`"
EXPLAINED = {
    "test_attention_outputs": f"{ATTENTION_FREE}: there are no attention weights to return",
    "test_multimodal_outputs_are_returned": f"{ATTENTION_FREE}: there are no attention weights to return",
    "test_eager_matches_sdpa_inference": f"{ATTENTION_FREE}: no attention for eager and SDPA to compute",
    "test_sdpa_can_dispatch_non_composite_models": f"{ATTENTION_FREE}: no attention to dispatch to SDPA",
    "test_bc_cache_name_forward": f"{NO_KEY_VALUE_STATE}, and the suite skips",
    "test_past_key_values_format": f"{NO_KEY_VALUE_STATE}, and the suite skips",
    "test_generate_continue_from_past_key_values": f"{NO_KEY_VALUE_STATE}, and the suite skips",
    "test_greedy_generate_dict_outputs_use_cache": (
        f"{NO_KEY_VALUE_STATE}: the test fails at its last check, that `generate(use_cache=True)` returns a `Cache` "
        "(its checks of scores, logits and per-step hidden states, made before, pass)"
    ),
    "test_beam_search_generate_dict_outputs_use_cache": (
        f"{NO_KEY_VALUE_STATE}: the test fails at its last check, that `generate(use_cache=True)` returns a `Cache` "
        "(its checks of scores, logits and per-step hidden states, made before, pass)"
    ),
    "test_assisted_decoding": (
        f"{NO_KEY_VALUE_STATE}; assisted decoding rolls a cache back after rejected draft tokens, so transformers "
        "refuses it without one"
    ),
    "test_left_padding_compatibility": (
        "the suite skips it for test classes declaring `has_attentions = False` (it ties padding to attention "
        "weights); \"replace\" handles padding: `tests/test_gaam_gpt2_contract.py::"
        "test_left_padded_generation_equals_each_row_generated_alone` checks every step of a left-padded generation "
        "in every placement"
    ),
}
# Why GPT-2 itself fails a test, where the suite's message does not say (read from the installed transformers).
ASSISTED = (
    "transformers' assisted decoding indexes `outputs.attentions[0]`; GPT-2 under SDPA (the tester's default) returns "
    "an empty tuple of attentions"
)
GPT2_FAILURE_CAUSES = {
    "test_assisted_decoding_matches_greedy_search": ASSISTED,
    "test_assisted_decoding_sample": ASSISTED,
    "test_prompt_lookup_decoding_matches_greedy_search": ASSISTED,
    "test_generate_with_static_cache": (
        "the installed release sizes a static cache to `max_length - 1` positions (the last token is never fed "
        "back); this copy of the test expects `max_length`"
    ),
    "test_generate_from_inputs_embeds_with_static_cache": (
        "the installed release sizes a static cache to `max_length - 1` positions (the last token is never fed "
        "back); this copy of the test expects `max_length`"
    ),
    "test_generate_compile_model_forward": "the installed release's generation config has no `compile_config`",
    "test_contrastive_generate": "moved to the Hub (`custom_generate`) in transformers 5; no Hub here",
    "test_dola_decoding_sample": "moved to the Hub (`custom_generate`) in transformers 5; no Hub here",
    "test_group_beam_search_generate": "moved to the Hub (`custom_generate`) in transformers 5; no Hub here",
    "test_training_gradient_checkpointing_use_reentrant": (
        "GPT-2's test file (a newer copy) calls a mixin test that the installed release's test_modeling_common lacks"
    ),
}
# Summaries of the suite's parts, read from the mixins in the folder: a stub without tests means they did not run.
SUITE_FILES = [
    "tests/test_modeling_common.py",
    "tests/causal_lm_tester.py",
    "tests/models/gpt2/test_modeling_gpt2.py",
    "tests/test_configuration_common.py",
    "tests/test_pipeline_mixin.py",
    "tests/generation/test_utils.py",
    "tests/exporters/test_export.py",
]
GENERATION = "generation (`GenerationTesterMixin`)"
PARTS = {
    GENERATION: "tests.generation.test_utils:GenerationTesterMixin",
    "export (`ExportTesterMixin`)": "tests.exporters.test_export:ExportTesterMixin",
}


def checkout_root(folder: Path) -> Path:
    """The folder holding `tests/` (accepts that folder or `tests/` itself); a clear error if it is neither."""
    for root in (folder, folder.parent):
        if (root / GPT2_TESTS).is_file():
            missing = [path for path in ("src/transformers", "tests/utils/tiny_model_summary.json")
                       if not (root / path).exists()]
            if missing:
                raise SystemExit(
                    f"--transformers-tests {str(folder)!r}: found {GPT2_TESTS} but not {', '.join(missing)}; "
                    "transformers' test mixins read them (a git checkout of transformers has both)."
                )
            return root
    raise SystemExit(
        f"--transformers-tests {str(folder)!r} holds no {GPT2_TESTS}: pass a transformers checkout (the folder with "
        "`tests/` and `src/`) of the installed release, or of the closest release to be had."
    )


def _environment(root: Path) -> dict:
    """The transformers checkout's `tests` package and this repository's `hf_heads` importable; no Hub access."""
    path = [str(root), str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1"}


def run_suite(root: Path, keyword: str | None, timeout: int) -> tuple[dict, str]:
    """Run the three test classes in one pytest process; returns {run: {test: (outcome, reason)}} and pytest's tail."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "pytest.ini").write_text("[pytest]\n")  # none of this repository's pytest options
        (scratch / "test_gaam_gpt2_conformance.py").write_text(TEST_MODULE)
        report = scratch / "report.xml"
        command = [
            sys.executable, "-m", "pytest", str(scratch / "test_gaam_gpt2_conformance.py"),
            "-c", str(scratch / "pytest.ini"),
            "-q", "-p", "no:cacheprovider", "-W", "ignore", f"--junitxml={report}",
        ] + (["-k", keyword] if keyword else [])
        completed = subprocess.run(
            command, cwd=root, env=_environment(root), capture_output=True, text=True, timeout=timeout
        )
        if not report.exists():
            raise SystemExit(f"pytest did not run the suite:\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
        return parse_report(report), completed.stdout.strip().splitlines()[-1]


def parse_report(report: Path) -> dict:
    outcomes = {run: {} for run in RUNS}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        run = case.get("classname", "").rsplit(".", 1)[-1]
        if run not in outcomes:
            continue
        problems = [child for child in case if child.tag in ("failure", "error")]
        skips = [child for child in case if child.tag == "skipped"]
        if problems:
            outcome, reasons = "failed", problems
        elif skips:
            outcome, reasons = "skipped", skips
        else:
            outcome, reasons = "passed", []
        reason = "; ".join(dict.fromkeys(_first_line(child.get("message", "")) for child in reasons))
        outcomes[run][case.get("name")] = (outcome, reason)
    return outcomes


def _first_line(message: str, limit: int = 220) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return (line[: limit - 3] + "...") if len(line) > limit else line


def report_body(outcomes: dict, pytest_tail: str, root: Path, missing_parts: list[str]) -> str:
    import transformers

    gpt2 = outcomes["TestGPT2"]
    lines = [
        f"transformers {transformers.__version__}: its GPT-2 test class run on GPT-2 and on the GAAM-GPT2 classes "
        f"swapped into GPT-2's tester (GAAM in every block, gates opened: `gaam_gate_init={GATE_INIT}`), in one "
        f"pytest session, with the test files in `{root}`.",
        "",
    ]
    if missing_parts:
        lines += [
            f"Not run: the {' and '.join(missing_parts)} tests (the mixins in that folder hold no tests).",
            "",
        ]
    if GENERATION not in missing_parts:
        lines += [
            "The generation tests ask for attentions from models running SDPA (the tester's default), which return "
            "none, so the attention-shape checks of those tests compare empty tuples in every run; "
            "`tests/test_gaam_gpt2_contract.py` checks GAAM-GPT2's attentions per generation step under eager "
            "attention.",
            "",
        ]
    lines += [
        "| run | tests | passed | failed | skipped |",
        "|---|---|---|---|---|",
    ]
    for run, label in RUNS.items():
        counts = Counter(outcome for outcome, _ in outcomes[run].values())
        lines.append(
            f"| {label} | {len(outcomes[run])} | {counts['passed']} | {counts['failed']} | {counts['skipped']} |"
        )
    augment_regressions = [
        test for test, (outcome, _) in gpt2.items()
        if outcome == "passed" and outcomes["TestGaamGPT2Augment"].get(test, ("missing", ""))[0] != "passed"
    ]
    lines += [
        "",
        f"pytest's own summary (it counts failed subtests one by one): {pytest_tail}",
        "",
        f"Tests that pass for GPT-2 and not for GAAM-GPT2 \"augment\": {len(augment_regressions)}"
        + (f" ({', '.join(augment_regressions)})." if augment_regressions else "."),
        "",
        "## Outcomes that differ from GPT-2's",
        "",
        "| test | GPT-2 | augment | replace | why |",
        "|---|---|---|---|---|",
    ]
    for test in sorted(gpt2):
        row = {run: outcomes[run].get(test, ("missing", "")) for run in RUNS}
        if row["TestGaamGPT2Augment"][0] == row["TestGPT2"][0] == row["TestGaamGPT2Replace"][0]:
            continue
        lines.append(
            f"| `{test}` | {row['TestGPT2'][0]} | {row['TestGaamGPT2Augment'][0]} | {row['TestGaamGPT2Replace'][0]} "
            f"| {_why(test, row)} |"
        )
    lines += [
        "",
        "## Test files (so that a rerun can tell whether it ran the same suite)",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
    ]
    for name in SUITE_FILES:
        path = root / name
        if path.is_file():
            data = path.read_bytes()
            lines.append(f"| `{name}` | {len(data)} | `{hashlib.sha256(data).hexdigest()[:16]}` |")
        else:
            lines.append(f"| `{name}` | missing | |")
    provenance = root / "PATCHES.txt"
    if provenance.is_file():
        lines += ["", f"Where the files come from and what was changed (`{provenance}`):", "", "```"]
        lines += provenance.read_text().rstrip().splitlines() + ["```"]
    lines += [
        "",
        "## GPT-2's own failures (the same in every run unless listed above)",
        "",
        "| test | reason | cause |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{test}` | {_escape(reason)} | {_escape(_gpt2_cause(test))} |"
        for test, (outcome, reason) in sorted(gpt2.items())
        if outcome == "failed"
    ]
    return "\n".join(lines) + "\n"


def _gpt2_cause(test: str) -> str:
    return next((text for name, text in GPT2_FAILURE_CAUSES.items() if test.startswith(name)), "")


def _why(test: str, row: dict) -> str:
    reasons = []
    for run, label in (("TestGaamGPT2Augment", "augment"), ("TestGaamGPT2Replace", "replace")):
        outcome, reason = row[run]
        if outcome == row["TestGPT2"][0]:
            continue
        explained = next((text for name, text in EXPLAINED.items() if test.startswith(name)), None)
        if run == "TestGaamGPT2Replace" and explained:
            reason = f"{explained} (suite: \"{reason}\")" if reason else explained
        if row["TestGPT2"][0] == "failed":
            reason += f"; GPT-2 fails it: {row['TestGPT2'][1]}"
        reasons.append(f"{label}: {reason}")
    return _escape(" / ".join(reasons))


def parts_not_run(root: Path) -> list[str]:
    """The suite's mixins that hold no tests in this folder (stubs standing in for files it could not have)."""
    code = (
        "import importlib, json, sys\n"
        "found = {}\n"
        "for label, target in json.loads(sys.argv[1]).items():\n"
        "    module, name = target.split(':')\n"
        "    mixin = getattr(importlib.import_module(module), name)\n"
        "    found[label] = any(attribute.startswith('test_') for attribute in dir(mixin))\n"
        "print(json.dumps(found))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(PARTS)], cwd=root, env=_environment(root), capture_output=True,
        text=True, check=True,
    )
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    return [label for label, has_tests in found.items() if not has_tests]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformers-tests", type=Path, required=True,
                        help="a transformers checkout (the folder holding tests/ and src/)")
    parser.add_argument(
        "-k", dest="keyword", help="pytest -k expression: run part of the suite (the result file covers that part)"
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds for the whole pytest run")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args()
    root = checkout_root(args.transformers_tests.expanduser().resolve())
    outcomes, pytest_tail = run_suite(root, args.keyword, args.timeout)
    body = report_body(outcomes, pytest_tail, root, parts_not_run(root))
    path = write_result("conformance", body, args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
