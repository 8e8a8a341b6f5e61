"""The `default` validation suite: what every split of a release must satisfy.

Each expectation carries `meta = {"critical": bool, "why": str}`. A failed critical
expectation stops the release; a failed non-critical one is reported as a warning. `why`
is the sentence a user reads in the error message, so it names the risk the check controls.

Two suites: `split_suite` checks one split's rows; `lineage_suite` checks a frame derived
from all splits together (built by `tasks.validate.lineage_frame`: one row per id,
cluster id or parent id, with the number of splits it occurs in).
"""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from corpusmill.tasks import pii, schema
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

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> SuiteParams:
        share = recipe.augment.max_synthetic_share if recipe.augment is not None else 1.0
        return cls(recipe.filters.min_tokens, recipe.filters.max_tokens, share)


def _meta(why: str, critical: bool = True) -> dict:
    return {"critical": critical, "why": why}


def split_suite(params: SuiteParams, name: str, *, empty: bool = False) -> gx.ExpectationSuite:
    """The suite for one split's rows, named `default.<name>`.

    With `empty=True` only the columns and their types are checked: a tiny dataset may have a
    split with no rows, where a mean (the synthetic share) is undefined and row checks are vacuous.
    """
    groups = [_schema]
    if not empty:
        groups += [_not_null, _ids_and_texts, _token_bounds, _synthetic_cap, _provenance, _no_personal_data,
                   _one_row_per_cluster]
    # The suite gets its expectations at construction: `add_expectation` needs an active context.
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


def _no_personal_data(params: SuiteParams) -> list[gxe.Expectation]:
    """One expectation per personal-data pattern of tasks.pii, so a failure names the kind of data."""
    return [
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text",
            regex=pattern,
            meta=_meta(f"no personal data: text must not match the '{pattern_name}' pattern of tasks.pii"),
        )
        for pattern_name, (pattern, _) in pii.PATTERNS.items()
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
    """The suite for the cross-split lineage frame (columns key, n_splits, splits)."""
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
