"""`cnnspec schema`: a valid JSON Schema that accepts every example spec and rejects bad ones."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SPECS

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator():
    from cnnspec.registry.manager import default_registry
    from cnnspec.tools.schema import json_schema

    schema = json_schema(default_registry())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_command_writes_json(cli, tmp_path):
    res = cli("schema")
    assert res.code == 0
    doc = json.loads(res.out)
    assert doc["$schema"].endswith("2020-12/schema") and "layers" in doc["properties"]
    assert cli("schema", "-o", str(tmp_path / "s.json")).code == 0
    assert json.loads((tmp_path / "s.json").read_text()) == doc


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_every_example_spec_validates_against_the_schema(validator, spec):
    errors = list(validator.iter_errors(yaml.safe_load(spec.read_text())))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(
    "patch",
    [
        lambda d: d["layers"][0].update(kernal_size=3),            # typo'd key
        lambda d: d["layers"].append("rellu"),                      # unknown layer
        lambda d: d["layers"].append({"type": "linear"}),           # missing out_features
        lambda d: d["layers"][0].update(padding="sme"),             # bad literal
        lambda d: d["train"]["optimizer"].update(lr="fast"),        # wrong type
        lambda d: d["train"].update(optimizer={"type": "adamm"}),   # unknown optimizer
        lambda d: d["data"].update(batch_sise=3),                   # typo'd section key
        lambda d: d.update(inputs=[1, 2, 3]),                       # unknown top-level key
    ],
)
def test_bad_specs_fail_the_schema(validator, patch):
    doc = yaml.safe_load((SPECS[0].parent / "mnist_cnn.yaml").read_text())
    assert not list(validator.iter_errors(doc))
    patch(doc)
    assert list(validator.iter_errors(doc))


def test_schema_carries_descriptions(validator):
    layer = next(o for o in validator.schema["properties"]["layers"]["items"]["anyOf"] if o.get("title") == "conv2d")
    assert "kernel size" in layer["properties"]["kernel_size"]["description"]
    assert "Conv2D" in {o.get("title") for o in validator.schema["properties"]["layers"]["items"]["anyOf"]}


def test_every_reference_in_the_schema_resolves():
    """Python's jsonschema resolves $refs lazily, so a dangling one passes the tests above unless the
    spec uses that section; editors (ajv, yaml-language-server) refuse the whole schema for it."""
    import re

    from cnnspec.registry.manager import default_registry
    from cnnspec.tools.schema import json_schema

    schema = json_schema(default_registry())
    refs = set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema)))
    assert refs and not sorted(r for r in refs if r not in schema["$defs"])
