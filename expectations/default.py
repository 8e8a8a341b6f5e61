"""The `default` validation suite: what every file and split of a release must satisfy.

Each expectation carries `meta = {"critical": bool, "why": str}`. A failed critical
expectation stops the release; a failed non-critical one is reported as a warning. `why`
is the sentence a user reads in the error message, so it names the risk the check controls.

Four suites, so that no batch holds more than one file's texts:

- `rows_suite` checks the rows of one release file (schema, nulls, bounds, provenance);
- `split_suite` checks what holds over a whole split, on its compact frame (built by
  `tasks.validate_sets`: per row the 64-bit hashes of id, text and cluster id, and `synthetic`);
- `lineage_suite` checks a frame of every lineage key's hash with the number of splits it
  occurs in (ids, cluster ids and synthetic rows' parents);
- `safety_suite` checks what the filter steps promise, on a frame of what the same
  detectors still find in each row of one file (personal data per type, eval-set n-gram hits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from corpusmill.tasks import schema
from corpusmill.tasks.filters.pii import TYPES as PII_TYPES
from corpusmill.tasks.recipe import Recipe

SUITE = "default"

# The pandas dtype of each release column as the validate stage reads it (Arrow -> pandas 3):
# 'str' for strings, 'int32', 'bool'. Derived, so it follows the schema when the schema changes.
RELEASE_DTYPES: dict[str, str] = schema.RELEASE.empty_table().to_pandas().dtypes.astype(str).to_dict()


@dataclass(frozen=True)
class SuiteParams:
    """The recipe settings the suite checks against."""

    min_tokens: int
    max_tokens: int | None
    max_synthetic_share: float  # 1.0 when the recipe has no augment stage
    columns: tuple[str, ...] = tuple(schema.RELEASE.names)
    languages: tuple[str, ...] = ()  # the language step's allowed languages; () when it drops none
    min_language_score: float = 0.0
    personal_data: tuple[str, ...] = ()  # personal-data types the pii step redacts or drops
    pii_step: Any = None  # that step, whose detectors (and phone regions) the safety frame uses
    eval_sets: tuple[str, ...] = ()  # eval sets decontaminated with policy drop

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> SuiteParams:
        """The bounds the recipe's steps promise; the last step of a kind decides."""
        share = recipe.augment.max_synthetic_share if recipe.augment is not None else 1.0
        steps = {s.step: s for s in recipe.filters}
        tokens, language, pii = steps.get("tokens"), steps.get("language"), steps.get("pii")
        return cls(
            tokens.min if tokens else 0, tokens.max if tokens else None, share,
            languages=tuple(language.languages or ()) if language else (),
            min_language_score=language.min_score if language and language.languages else 0.0,
            personal_data=tuple(t for t in PII_TYPES if pii.action_for(t) != "keep") if pii else (), pii_step=pii,
            eval_sets=tuple(e.name for e in recipe.decontaminate if e.policy == "drop"),
        )


def _meta(why: str, critical: bool = True) -> dict:
    return {"critical": critical, "why": why}


def rows_suite(params: SuiteParams, name: str, *, empty: bool = False) -> gx.ExpectationSuite:
    """The suite for the rows of one release file, named `default.<name>`.

    With `empty=True` only the columns and their types are checked: a file with no rows
    (a split a tiny dataset leaves empty) has nothing else to check. That suite is named
    `default.<name>-empty`: a validation run reuses a suite by its name, so an empty file
    checked first must not leave the files after it with only the schema checked.
    """
    groups = [_schema]
    if not empty:
        groups += [_not_null, _token_bounds, _languages, _provenance]
    # The suite gets its expectations at construction: `add_expectation` needs an active context.
    return gx.ExpectationSuite(name=f"{SUITE}.{name}" + ("-empty" if empty else ""),
                               expectations=[e for group in groups for e in group(params)])


def split_suite(params: SuiteParams, name: str) -> gx.ExpectationSuite:
    """The suite for a whole split's compact frame (hashes of id, text and cluster id, and
    synthetic), named `default.<name>`; only for a split with rows, where a mean is defined."""
    groups = [_ids_and_texts, _synthetic_cap, _one_row_per_cluster]
    return gx.ExpectationSuite(name=f"{SUITE}.{name}", expectations=[e for group in groups for e in group(params)])


def _schema(params: SuiteParams) -> list[gxe.Expectation]:
    """The release columns, in order, each with its type."""
    return [
        gxe.ExpectTableColumnsToMatchOrderedList(
            column_list=list(params.columns),
            meta=_meta("the split's columns must be the release schema, in order, so every split loads as one dataset"),
        ),
        *(
            gxe.ExpectColumnValuesToBeOfType(
                column=column,
                type_=RELEASE_DTYPES[column],
                meta=_meta(f"{column} must have the release schema's type ({schema.RELEASE.field(column).type})"),
            )
            for column in params.columns
            if column in RELEASE_DTYPES
        ),
    ]


def _not_null(params: SuiteParams) -> list[gxe.Expectation]:
    """The columns every row has, original or synthetic."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column=column, meta=_meta(f"every row needs its {column}; a null here means a stage lost data")
        )
        for column in ("id", "text", "source", "license", "n_tokens", "synthetic", "cluster_id")
    ]


def _ids_and_texts(params: SuiteParams) -> list[gxe.Expectation]:
    # On the split's frame, `id` and `text` hold 64-bit hashes: equal values, equal hashes.
    return [
        gxe.ExpectColumnValuesToBeUnique(
            column="id",
            meta=_meta("ids identify rows across rebuilds, diffs and lineage; a repeat makes them ambiguous"),
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="text", meta=_meta("no duplicate texts: exact duplicates must have been removed by dedup")
        ),
    ]


def _token_bounds(params: SuiteParams) -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens",
            min_value=params.min_tokens,
            max_value=params.max_tokens,
            meta=_meta(
                f"token counts must lie within the recipe's filters "
                f"(min_tokens={params.min_tokens}, max_tokens={params.max_tokens})"
            ),
        )
    ]


def _synthetic_cap(params: SuiteParams) -> list[gxe.Expectation]:
    # `synthetic` is boolean, so its mean is the share of generated rows.
    return [
        gxe.ExpectColumnMeanToBeBetween(
            column="synthetic",
            min_value=0.0,
            max_value=params.max_synthetic_share,
            meta=_meta(
                f"the synthetic share of a split must not exceed the recipe's cap "
                f"(max_synthetic_share={params.max_synthetic_share})"
            ),
        )
    ]


def _provenance(params: SuiteParams) -> list[gxe.Expectation]:
    """What a synthetic row must record to be traced and generated again."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column=column,
            row_condition=Column("synthetic") == True,  # a GE row condition, not a Python comparison
            meta=_meta(f"every synthetic row must record its provenance, including {column}"),
        )
        for column in ("parent_id", "generator", "prompt_id", "sampling")
    ]


def _languages(params: SuiteParams) -> list[gxe.Expectation]:
    """Rows in the languages the language step allows, at its minimum score."""
    if not params.languages:
        return []
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="language", value_set=list(params.languages),
            meta=_meta(f"every row must be in a language the recipe allows ({', '.join(params.languages)})"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="language_score", min_value=params.min_language_score,
            meta=_meta(f"every row's language must be identified with at least the recipe's min_score "
                       f"({params.min_language_score})"),
        ),
    ]


def _one_row_per_cluster(params: SuiteParams) -> list[gxe.Expectation]:
    # Dedup keeps one member per near-duplicate cluster, so a repeat means near duplicates
    # survived; worth a look, but the texts differ, so it does not stop the release.
    return [
        gxe.ExpectColumnValuesToBeUnique(
            column="cluster_id",
            meta=_meta(
                "dedup keeps one member per near-duplicate cluster; repeated cluster ids mean near duplicates remain",
                critical=False,
            ),
        )
    ]


def lineage_suite() -> gx.ExpectationSuite:
    """The suite for the cross-split lineage frame (columns key (a 64-bit hash), n_splits,
    splits, key_name)."""
    no_shared_lineage = gxe.ExpectColumnValuesToBeBetween(
        column="n_splits",
        min_value=1,
        max_value=1,
        meta=_meta(
            "no lineage shared across splits: a row id, near-duplicate cluster or synthetic row's parent "
            "in two splits leaks training data into evaluation"
        ),
    )
    one_row_per_key = gxe.ExpectColumnValuesToBeUnique(
        column="key", meta=_meta("the lineage frame must have one row per key, or n_splits undercounts")
    )
    return gx.ExpectationSuite(name=f"{SUITE}.lineage", expectations=[no_shared_lineage, one_row_per_key])


def safety_columns(params: SuiteParams) -> dict[str, str]:
    """The safety frame's count columns -> what each counts: one per personal-data type the
    pii step removes and per eval set decontaminated by dropping, so a failure names it."""
    columns = {f"personal_data.{t}": f"'{t}' personal data" for t in params.personal_data}
    columns.update({f"eval_hits.{name}": f"n-grams of eval set '{name}'" for name in params.eval_sets})
    return columns


def safety_suite(params: SuiteParams) -> gx.ExpectationSuite:
    """The suite for one file's safety frame (columns id, split and `safety_columns`): nothing left to find."""
    return gx.ExpectationSuite(name=f"{SUITE}.safety", expectations=[
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=0, max_value=0,
            meta=_meta(f"no {what} may be left in a release whose filters remove it"),
        )
        for column, what in safety_columns(params).items()
    ])
