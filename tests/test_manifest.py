"""Manifest → Plan: interpolation, `each` expansion, ids, precedence of settings, notices."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import IO

import pytest

from runner.errors import ManifestError
from runner.manifest.loader import LoadedManifest, load_manifest, parse_manifest
from runner.plan import PollPolicy, Rate, Secret
from runner.store.redaction import redact

ENV = {"PULSE_API_KEY": "pk-secret-1", "SPIDRA_API_KEY": "sk-secret-2"}
HEAD = """\
version: 1
name: unit
providers:
  pulse: {api_key: "${PULSE_API_KEY}"}
  spidra: {api_key: "${SPIDRA_API_KEY}"}
jobs:
"""
PULSE_JOB = (
    "  - {id: a, provider: pulse, type: extract, params: {file_url: 'https://x.example/a'}}\n"
)


def parse(
    text: str,
    env: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    sandbox_keys: bool = False,
) -> LoadedManifest:
    def opener(path: Path) -> IO[bytes]:
        if files is None or path.name not in files:
            raise FileNotFoundError(path)
        return io.BytesIO(files[path.name])

    return parse_manifest(
        text.encode(),
        source=Path("m.yaml"),
        env=ENV if env is None else env,
        sandbox_keys=sandbox_keys,
        opener=opener,
    )


def problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse(text, **kwargs)  # type: ignore[arg-type]
    return [p.render() for p in caught.value.problems]


def pulse_each(each: str, params: str = '{file_url: "{item}"}', job_id: str = "doc-{n}") -> str:
    return HEAD + (
        f"  - id: '{job_id}'\n    provider: pulse\n    type: extract\n"
        f"    each: {each}\n    params: {params}\n"
    )


# -- interpolation and secrets -------------------------------------------------------------------


def test_api_keys_come_from_the_environment_and_are_secrets() -> None:
    loaded = parse(HEAD + PULSE_JOB)
    pulse = loaded.plan.providers["pulse"]
    assert pulse.api_key == "pk-secret-1"
    assert isinstance(pulse.api_key, Secret)
    assert pulse.api_key_var == "PULSE_API_KEY"
    assert set(loaded.plan.secrets) == {"pk-secret-1", "sk-secret-2"}
    assert "pk-secret-1" not in repr(loaded.plan)
    assert loaded.notices == ()


def test_interpolation_inside_a_longer_value_and_in_base_url() -> None:
    text = (
        HEAD.replace(
            'pulse: {api_key: "${PULSE_API_KEY}"}',
            'pulse: {api_key: "Token ${PULSE_API_KEY}", base_url: "${PULSE_URL}/v2"}',
        )
        + PULSE_JOB
    )
    loaded = parse(text, env={**ENV, "PULSE_URL": "http://127.0.0.1:9"})
    assert loaded.plan.providers["pulse"].api_key == "Token pk-secret-1"
    assert loaded.plan.providers["pulse"].base_url == "http://127.0.0.1:9/v2"


def test_the_variable_inside_a_longer_key_is_a_secret_of_its_own() -> None:
    text = HEAD.replace('"${PULSE_API_KEY}"', '"Token ${PULSE_API_KEY}"') + PULSE_JOB
    plan = parse(text).plan
    assert set(plan.secrets) == {"Token pk-secret-1", "pk-secret-1", "sk-secret-2"}
    # a provider echoing only the token (not the `Token ` prefix) is still redacted
    assert redact("401: bad key pk-secret-1", plan.secrets) == "401: bad key ***"


def test_a_missing_variable_is_named_and_no_value_is_printed() -> None:
    found = problems(
        HEAD + PULSE_JOB,
        env={"SPIDRA_API_KEY": "sk-secret-2"},
    )
    assert found == [
        "m.yaml:4:20: providers.pulse.api_key: environment variable PULSE_API_KEY is not set"
    ]
    assert "sk-secret-2" not in "".join(found)


def test_sandbox_keys_replace_unset_variables_with_a_notice() -> None:
    loaded = parse(
        HEAD + PULSE_JOB,
        env={},
        sandbox_keys=True,
    )
    assert loaded.plan.providers["pulse"].api_key == Secret("sandbox-key")
    assert loaded.notices == (
        "notice: PULSE_API_KEY is not set; using a sandbox key for pulse",
        "notice: SPIDRA_API_KEY is not set; using a sandbox key for spidra",
    )


def test_a_literal_key_works_with_a_notice_that_never_shows_it() -> None:
    text = HEAD.replace('"${PULSE_API_KEY}"', "literal-key-123") + PULSE_JOB
    loaded = parse(text)
    assert loaded.plan.providers["pulse"].api_key == "literal-key-123"
    assert "literal-key-123" in loaded.plan.secrets
    assert loaded.notices == (
        "notice: m.yaml:4:20: providers.pulse.api_key: the key is written in the manifest; "
        "keep it in the environment: api_key: ${PULSE_API_KEY}",
    )


@pytest.mark.parametrize("raw", ["${PULSE_API_KEY", "${1PULSE}", "pre-${PULSE-KEY}"])
def test_a_malformed_reference_is_an_error_not_a_literal_key(raw: str) -> None:
    text = HEAD.replace('"${PULSE_API_KEY}"', f'"{raw}"') + PULSE_JOB
    assert problems(text) == [
        "m.yaml:4:20: providers.pulse.api_key: malformed ${...} reference; "
        "write api_key: ${PULSE_API_KEY}"
    ]


def test_env_references_elsewhere_are_left_alone_with_a_notice() -> None:
    loaded = parse(
        HEAD
        + "  - {id: a, provider: spidra, type: scrape, params: {urls: [{url: 'https://x.example/'}],"
        " prompt: 'cost in ${CURRENCY}'}}\n"
    )
    assert loaded.plan.jobs[0].params["prompt"] == "cost in ${CURRENCY}"
    assert loaded.notices == (
        "notice: m.yaml:7:99: jobs[0] (id: a).params.prompt: ${CURRENCY} is not interpolated "
        "here; only api_key and base_url take ${VAR}",
    )


# -- each --------------------------------------------------------------------------------------


def test_each_list_substitutes_n_and_item_in_id_and_params() -> None:
    loaded = parse(pulse_each("[https://x.example/a.pdf, https://x.example/b.pdf]"))
    assert [(j.id, j.params["file_url"], j.index) for j in loaded.plan.jobs] == [
        ("doc-1", "https://x.example/a.pdf", 0),
        ("doc-2", "https://x.example/b.pdf", 1),
    ]


def test_each_text_file_skips_blank_lines_and_strips_items() -> None:
    data = b"\xef\xbb\xbfhttps://x.example/a.pdf\r\n\n   \n  https://x.example/b.pdf  \n"
    loaded = parse(pulse_each("{file: urls.txt}"), files={"urls.txt": data})
    assert [j.params["file_url"] for j in loaded.plan.jobs] == [
        "https://x.example/a.pdf",
        "https://x.example/b.pdf",
    ]
    assert [j.id for j in loaded.plan.jobs] == ["doc-1", "doc-2"]


def test_each_jsonl_fields_and_a_lone_placeholder_keeps_its_type() -> None:
    data = (
        b'{"sku": "A-1", "url": "https://x.example/1", "pages": 2}\n\n'
        b'{"sku": "B-2", "url": "https://x.example/2", "pages": 5}\n'
    )
    text = HEAD + (
        "  - id: 'crawl-{sku}'\n    provider: spidra\n    type: crawl\n"
        "    each: {file: items.jsonl}\n"
        "    params: {baseUrl: '{url}', maxPages: '{pages}',\n"
        "             crawlInstruction: 'item {n} of {sku}'}\n"
    )
    loaded = parse(text, files={"items.jsonl": data})
    assert [j.id for j in loaded.plan.jobs] == ["crawl-a-1", "crawl-b-2"]
    assert loaded.plan.jobs[1].params == {
        "baseUrl": "https://x.example/2",
        "maxPages": 5,
        "crawlInstruction": "item 2 of B-2",
    }


def test_each_csv_columns_become_placeholders() -> None:
    data = b'sku,url,note\nA1,https://x.example/1,"a, quoted"\nA2,https://x.example/2,plain\n'
    text = HEAD + (
        "  - id: 'page-{sku}'\n    provider: spidra\n    type: scrape\n"
        "    each: {file: items.csv}\n"
        "    params: {urls: [{url: '{url}', instruction: '{note}'}]}\n"
    )
    loaded = parse(text, files={"items.csv": data})
    assert [(j.id, j.params["urls"][0]) for j in loaded.plan.jobs] == [
        ("page-a1", {"url": "https://x.example/1", "instruction": "a, quoted"}),
        ("page-a2", {"url": "https://x.example/2", "instruction": "plain"}),
    ]


def test_double_braces_are_literal_braces() -> None:
    text = HEAD + (
        "  - id: 'p-{n}'\n    provider: spidra\n    type: scrape\n    each: [a]\n"
        "    params: {urls: [{url: 'https://x.example/{item}'}],\n"
        "             prompt: 'as {{json}} for {item}'}\n"
    )
    assert parse(text).plan.jobs[0].params["prompt"] == "as {json} for a"


def test_placeholder_free_parts_are_shared_not_copied() -> None:
    params = '{file_url: "{item}", extensions: {chunking: {chunk_size: 100}}}'
    loaded = parse(pulse_each("[https://x.example/a, https://x.example/b]", params=params))
    first, second = loaded.plan.jobs
    assert first.params["extensions"] is second.params["extensions"]
    assert first.params is not second.params


def test_ids_from_values_are_slugs_and_stable() -> None:
    each = "[https://Shop.example/Prices?page=1, https://shop.example/about]"
    text = pulse_each(each, job_id="page-{item}")
    first = [j.id for j in parse(text).plan.jobs]
    assert first == ["page-https-shop.example-prices-page-1", "page-https-shop.example-about"]
    assert [j.id for j in parse(text).plan.jobs] == first


def test_overlong_ids_keep_a_prefix_and_a_stable_hash() -> None:
    long_url = "https://x.example/" + "a" * 300
    text = pulse_each(f"[{long_url}]", job_id="page-{item}")
    (job,) = parse(text).plan.jobs
    assert len(job.id) == 128
    assert job.id.startswith("page-https-x.example-aaaa")
    assert job.id == parse(text).plan.jobs[0].id


def test_each_items_with_fields_in_a_list() -> None:
    each = "[{sku: a1, url: 'https://x.example/1'}, {sku: a2, url: 'https://x.example/2'}]"
    loaded = parse(pulse_each(each, params='{file_url: "{url}"}', job_id="doc-{sku}"))
    assert [(j.id, j.params["file_url"]) for j in loaded.plan.jobs] == [
        ("doc-a1", "https://x.example/1"),
        ("doc-a2", "https://x.example/2"),
    ]


def test_a_jsonl_item_missing_a_field_is_located_in_the_file() -> None:
    data = b'{"sku": "a1", "url": "https://x.example/1"}\n{"sku": "a2"}\n'
    text = pulse_each("{file: items.jsonl}", params='{file_url: "{url}"}', job_id="doc-{sku}")
    assert problems(text, files={"items.jsonl": data}) == [
        "items.jsonl:2:1: jobs[0] (id: doc-{sku}).each: "
        "this item has no field 'url' (used as {url})"
    ]


# -- settings ------------------------------------------------------------------------------------


def test_poll_and_timeout_precedence_is_job_provider_defaults_builtin() -> None:
    text = """\
version: 1
name: prec
defaults:
  timeout: 10m
  poll: {initial: 1s, max: 20s, multiplier: 2}
providers:
  pulse:
    api_key: ${PULSE_API_KEY}
    poll: {initial: 3s}
    timeout: 20m
  spidra:
    api_key: ${SPIDRA_API_KEY}
jobs:
  - {id: a, provider: pulse, type: extract, params: {file_url: 'https://x.example/a'}}
  - {id: b, provider: pulse, type: extract, params: {file_url: 'https://x.example/b'},
     poll: {max: 500ms}, timeout: 1h}
  - {id: c, provider: spidra, type: scrape, params: {urls: [{url: 'https://x.example/'}]}}
"""
    plan = parse(text).plan
    assert plan.providers["pulse"].poll == PollPolicy(3.0, 20.0, 2.0)
    assert plan.providers["pulse"].timeout == 1200.0
    assert plan.providers["spidra"].poll == PollPolicy(1.0, 20.0, 2.0)
    assert plan.providers["spidra"].timeout == 600.0
    a, b, c = plan.jobs
    assert (a.poll, a.timeout) == (PollPolicy(3.0, 20.0, 2.0), 1200.0)
    assert (b.poll, b.timeout) == (PollPolicy(3.0, 3.0, 2.0), 3600.0)  # max never below initial
    assert (c.poll, c.timeout) == (PollPolicy(1.0, 20.0, 2.0), 600.0)


def test_without_any_poll_settings_the_provider_default_applies() -> None:
    plan = parse(HEAD + PULSE_JOB).plan
    assert plan.providers["spidra"].poll == PollPolicy(5.0, 15.0, 1.5)
    assert plan.jobs[0].poll == PollPolicy(2.0, 30.0, 1.5)
    assert plan.jobs[0].timeout == 1800.0


def test_limits_override_the_published_ones_field_by_field() -> None:
    text = """\
version: 1
name: lim
providers:
  lobstr:
    api_key: ${PULSE_API_KEY}
    limits:
      requests: {rate: 2, per: 500ms, burst: 3}
      status: {rate: 30, per: 1m}
jobs:
  - {id: a, provider: lobstr, type: run, params: {squid: 0123456789abcdef0123456789abcdef}}
"""
    limits = parse(text).plan.providers["lobstr"].limits
    assert limits.requests == Rate(2.0, 0.5, 3)
    assert limits.endpoints["status"] == Rate(30.0, 60.0, 1)
    assert limits.endpoints["submit"] == Rate(90, 60.0)  # published, untouched
    assert limits.in_flight == 5


def test_fetch_defaults_come_from_the_job_type_schema_and_retry_maps_to_none() -> None:
    text = """\
version: 1
name: f
providers:
  lobstr: {api_key: "${PULSE_API_KEY}"}
  spidra: {api_key: "${SPIDRA_API_KEY}"}
jobs:
  - {id: a, provider: lobstr, type: run, params: {squid: 0123456789abcdef0123456789abcdef},
     fetch: {export: true}}
  - {id: b, provider: spidra, type: batch, params: {urls: ['https://x.example/']}, retry: failed}
  - {id: c, provider: spidra, type: batch, params: {urls: ['https://x.example/']}, retry: none}
"""
    a, b, c = parse(text).plan.jobs
    assert dict(a.fetch) == {"results": True, "export": True}
    assert (b.retry, c.retry) == ("failed", None)


def test_declared_providers_without_jobs_are_in_the_plan() -> None:
    plan = parse(HEAD + PULSE_JOB).plan
    assert list(plan.providers) == ["pulse", "spidra"]
    assert plan.providers["spidra"].base_url == "https://api.spidra.io/api"


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
version: 1
name: anchors
providers:
  pulse: {api_key: "${PULSE_API_KEY}"}
jobs:
  - {<<: &common {provider: pulse, type: extract, timeout: 2m}, id: a,
     params: {file_url: 'https://x.example/a'}}
  - {<<: *common, id: b, params: {file_url: 'https://x.example/b'}, timeout: 3m}
"""
    plan = parse(text).plan
    assert [(j.id, j.provider, j.timeout) for j in plan.jobs] == [
        ("a", "pulse", 120.0),
        ("b", "pulse", 180.0),
    ]


def test_the_plan_keeps_the_manifest_bytes_and_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    text = HEAD + PULSE_JOB
    path.write_text(text)
    plan = load_manifest(path, env=ENV).plan
    assert plan.manifest_bytes == text.encode()
    assert plan.source == path
    assert plan.name == "unit"
    assert plan.manifest_sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("15m", 900.0), ("1h", 3600.0), ("1.5d", 129600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    manifest = (
        HEAD
        + f"  - {{id: a, provider: pulse, type: extract, timeout: {text}, params: {{file_url: 'https://x.example/a'}}}}\n"
    )
    assert parse(manifest).plan.jobs[0].timeout == seconds
