from pathlib import Path

import pytest
import yaml

from corpusmill.tasks.recipe import RecipeError, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parent.parent
MINIMAL = {"name": "tiny", "version": "1.0.0", "sources": [{"kind": "python-docs"}]}


def write(tmp_path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_recipe_is_valid():
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    assert recipe.name == "demo-docs" and recipe.augment and recipe.augment.templates == ["paraphrase", "qa"]


def test_defaults_are_filled_in_resolved_recipe():
    resolved = parse_recipe(MINIMAL).resolved()
    assert resolved["dedup"] == {"threshold": 0.8, "num_perm": 128, "ngram": 5, "seed": 1, "recall_target": 0.98,
                                 "max_cluster_size": 1000}
    assert resolved["sources"][0]["license"] == "PSF-2.0"


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"dedup": {"treshold": 0.5}}, "dedup.treshold: unknown key"),
        ({"name": "../evil"}, "name: dataset names use lowercase"),
        ({"name": "a/b"}, "name: dataset names use lowercase"),
        ({"name": "a..b"}, "'..' is not allowed"),
        ({"version": "one"}, "version must be semantic"),
        ({"splits": {"train": 0.5, "validation": 0.1, "test": 0.1}}, "sum to 1"),
        ({"tokenizer": {"name": "gpt2", "gguf": "smollm2"}}, "exactly one of name"),
        ({"sources": [{"kind": "files", "path": "x.jsonl", "format": "jsonl", "split_by": "chapter", "license": "x"}]},
         "format: text only"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, change, needle):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, {**MINIMAL, **change}))
    assert needle in str(e.value)
    assert str(tmp_path / "r.yaml") in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_parse_values_as_yaml(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), ["dedup.threshold=0.7", "version=2.0.0", "sources.0.limit=5"])
    assert recipe.dedup.threshold == 0.7 and recipe.version == "2.0.0" and recipe.sources[0].limit == 5
    with pytest.raises(RecipeError, match="key.sub=value"):
        load_recipe(write(tmp_path, MINIMAL), ["nonsense"])


def test_duplicate_source_names_rejected():
    data = {**MINIMAL, "sources": [{"kind": "python-docs"}, {"kind": "python-docs"}]}
    with pytest.raises(RecipeError, match="unique"):
        parse_recipe(data)


def test_default_file_source_name_does_not_depend_on_location():
    from corpusmill.tasks.recipe import FilesSource, source_name

    for prefix in ("", "/srv/data/", "s3://bucket/x/"):
        source = FilesSource(kind="files", path=f"{prefix}corpora/gutenberg/*.txt", license="x")
        assert source_name(source) == "gutenberg/*.txt"
    assert source_name(FilesSource(kind="files", path="/a/b/c.jsonl", license="x")) == "b/c.jsonl"
