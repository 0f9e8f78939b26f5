"""Input checks shared by the metrics: finite ``[examples, dims]`` matrices, label vectors and factors.

scipy.optimize and scikit-learn are imported inside the metrics that use them: training
imports this package for ``classification_error``, and importing scikit-learn would add
about two seconds to every start.
"""
import numpy as np


def check_matrix(values, name, num_rows=None, num_columns=None):
    """Checks a finite numeric ``[rows, columns]`` array; returns it as float64."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(
            f"{name}: expected a rank-2 array [examples, dims], received shape "
            f"{array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one example and one dim, received shape "
            f"{array.shape}")
    if num_rows is not None and array.shape[0] != num_rows:
        raise ValueError(
            f"{name}: expected {num_rows} rows (one per example), received "
            f"{array.shape[0]}")
    if num_columns is not None and array.shape[1] != num_columns:
        raise ValueError(
            f"{name}: expected {num_columns} columns, received {array.shape[1]}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, received dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(
            f"{name}: expected finite values, received {array.size - finite.sum()} "
            f"NaN or inf values (first in row {row})")
    return array


def check_labels(values, name, num_examples=None):
    """Checks a non-empty label vector ``[examples]`` (any values np.unique can sort)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name}: expected a rank-1 array [examples], received shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one label, received an empty array")
    if num_examples is not None and array.shape[0] != num_examples:
        raise ValueError(
            f"{name}: expected {num_examples} labels (one per example), received "
            f"{array.shape[0]}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite labels, received NaN or inf")
    return array


def check_factors(values, num_rows, rows_of):
    """Checks ground-truth factors: an integer ``[num_rows, factors >= 1]`` array; returns it.

    ``rows_of`` names what each row belongs to, for the error (e.g. "row of latents").
    """
    factors = np.asarray(values)
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise ValueError(
            f"factors: expected a rank-2 array [examples, factors] with at least one "
            f"factor, received shape {factors.shape}")
    if factors.shape[0] != num_rows:
        raise ValueError(f"factors: expected {num_rows} rows (one per {rows_of}), received {factors.shape[0]}")
    if factors.dtype == np.bool_ or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors: expected integer values, received dtype {factors.dtype}")
    return factors
