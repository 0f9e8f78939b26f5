"""Partially-specified graphical models (Siddharth et al. 2017): encoders and decoders as code.

A model is two ordinary functions that draw named random variables into a ``Trace``:

    def encode(q, x):                       # the recognition model q(y, z | x)
        y = q.discrete("y", classifier(x))  # supervised for some examples, latent for the rest
        z = q.variable("z", q_z(x, y))      # any tfp distribution; here q(z | x, y)
        return z

    def decode(p, x):                       # the generative model p(x, y, z)
        y = p.discrete("y", prior_logits)   # p is conditioned on q: values come from q
        z = p.variable("z", prior_z)
        p.observe("x", likelihood(y, z), x)

Dependencies are whatever the code says (q(z | x) then q(y | x, z), a chain, a shared
parent...).  Which variables are supervised is decided by the data: the encoder trace is
given ``supervision = {name: (value, mask)}`` and, for each example where ``mask`` is
True, the variable takes the observed value instead of a sample.  Nothing here branches
in Python on which examples are labelled: observed and sampled values are merged with
``tf.where`` per example.

Discrete variables are one-hot.  When latent they are either sampled from the Concrete
(Gumbel-softmax) relaxation at ``temperature``, scored in log space with
``ExpRelaxedOneHotCategorical`` (its change of variables is the same in q and p, so it
cancels in the ratio p / q), or enumerated exactly: the objective repeats the batch once
per value and tells the trace which copy holds which value.
"""
import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


@dataclasses.dataclass
class Record:
    """One drawn variable: its distribution, value and log-density per row.

    ``observed`` is a bool ``[rows]`` mask of rows whose value was supplied (always True
    for ``observe``d data, None for purely latent variables); ``relaxed`` marks rows of a
    discrete variable scored under the Concrete relaxation, whose log-space sample is
    ``log_value``.
    """

    name: str
    distribution: object
    value: tf.Tensor
    log_prob: tf.Tensor
    kind: str  # "latent", "supervised", "enumerated" or "observed"
    observed: tf.Tensor | None = None
    relaxed: tf.Tensor | None = None
    log_value: tf.Tensor | None = None


class Trace:
    """Named random variables drawn by an encoder or a decoder.

    Args:
      supervision: ``{name: (value, mask)}`` for the encoder: ``value`` is ``[rows, ...]``
        (for a discrete variable, int class ids ``[rows]`` or one-hot ``[rows, K]``),
        ``mask`` bool ``[rows]``, True where the value is observed.
      conditioned_on: for the decoder, the encoder's trace; every variable the decoder
        draws that the encoder drew takes the encoder's value.
      temperature: Concrete temperature for latent discrete variables.
      enumeration: ``(name, index)``: the discrete variable ``name`` is enumerated, and
        row r holds the value ``index[r]`` (int ``[rows]``) where it is not observed.
    """

    def __init__(self, supervision=None, conditioned_on=None, temperature=0.66, enumeration=None):
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive number, received {temperature}")
        self.supervision = dict(supervision or {})
        self.conditioned_on = conditioned_on
        self.temperature = float(temperature)
        self.enumeration = enumeration
        self.records = {}

    # --- reading -------------------------------------------------------------------------

    def __contains__(self, name):
        return name in self.records

    def __getitem__(self, name):
        if name not in self.records:
            raise ValueError(
                f"variable {name!r} is read before it is drawn; drawn so far: {list(self.records) or 'none'}"
            )
        return self.records[name].value

    def log_prob_sum(self, kinds=None):
        """Sum over variables (optionally only those of the given kinds) of their log-densities, ``[rows]``."""
        terms = [r.log_prob for r in self.records.values() if kinds is None or r.kind in kinds]
        return tf.add_n(terms) if terms else None

    # --- drawing -------------------------------------------------------------------------

    def _new(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, received {name!r}")
        if name in self.records:
            raise ValueError(f"variable {name!r} is drawn twice in one trace; every variable needs its own name")

    def _from_condition(self, name):
        if self.conditioned_on is not None and name in self.conditioned_on:
            return self.conditioned_on.records[name]
        return None

    def _supervision(self, name, rows):
        value, mask = self.supervision[name]
        mask = tf.convert_to_tensor(mask)
        if mask.dtype != tf.bool:
            raise ValueError(f"mask of {name!r}: expected dtype bool, received {mask.dtype.name}")
        if mask.shape.rank != 1 or (mask.shape[0] is not None and rows is not None and mask.shape[0] != rows):
            raise ValueError(f"mask of {name!r}: expected shape [{rows}], received {mask.shape}")
        return tf.convert_to_tensor(value), mask

    def variable(self, name, distribution, sample=None):
        """Draws a variable from any tfp ``distribution`` with batch shape ``[rows]``; returns its value.

        In an encoder it is sampled (reparameterised where the distribution allows) or,
        where supervised, takes the observed value; in a decoder conditioned on an
        encoder it takes the encoder's value; otherwise it is sampled.

        ``sample``: a draw of ``distribution`` made by the caller, used in place of
        ``distribution.sample()`` for the rows that are not observed (e.g. one draw shared
        by the copies of an example that must see the same noise); the caller keeps it
        reparameterised.  Not allowed where the value comes from the conditioning trace.
        """
        self._new(name)
        source = self._from_condition(name)
        if source is not None and sample is not None:
            raise ValueError(f"sample of {name!r}: a trace conditioned on another takes that trace's value; "
                             f"received a sample as well")
        if sample is not None:
            expected = distribution.batch_shape.concatenate(distribution.event_shape)
            sample = tf.convert_to_tensor(sample, distribution.dtype)
            if not sample.shape.is_compatible_with(expected):
                raise ValueError(f"sample of {name!r}: expected shape {expected} to fit its distribution, "
                                 f"received {sample.shape}")
        if source is not None:
            value = source.value
            kind = source.kind
            observed = source.observed
        elif name in self.supervision:
            observed_value, observed = self._supervision(name, distribution.batch_shape[0])
            expected = distribution.batch_shape.concatenate(distribution.event_shape)
            if not observed_value.dtype.is_floating and distribution.dtype.is_floating:
                raise ValueError(
                    f"supervised value of {name!r}: expected a {distribution.dtype.name} tensor, "
                    f"received {observed_value.dtype.name}"
                )
            if not observed_value.shape.is_compatible_with(expected):
                raise ValueError(
                    f"supervised value of {name!r}: expected shape {expected} to fit its distribution, "
                    f"received {observed_value.shape}"
                )
            observed_value = tf.cast(observed_value, distribution.dtype)
            sample = distribution.sample() if sample is None else sample
            event_dims = len(distribution.event_shape)
            mask = tf.reshape(observed, [-1] + [1] * event_dims)
            value = tf.where(mask, observed_value, sample)
            kind = "supervised"
        else:
            value = distribution.sample() if sample is None else sample
            kind, observed = "latent", None
        log_prob = distribution.log_prob(value)
        self.records[name] = Record(name, distribution, value, log_prob, kind, observed)
        return value

    def discrete(self, name, logits):
        """Draws a one-hot discrete variable with ``logits`` ``[rows, K]``; returns ``[rows, K]`` floats.

        Observed rows are scored exactly (log softmax at the observed class); latent rows
        are enumerated (if this is the enumerated variable) and scored exactly, or
        sampled from the Concrete relaxation and scored under it.
        """
        self._new(name)
        logits = tf.convert_to_tensor(logits)
        if logits.shape.rank != 2 or logits.shape[-1] is None or logits.shape[-1] < 2:
            raise ValueError(f"logits of {name!r}: expected [rows, K] with K >= 2, received {logits.shape}")
        num_values = logits.shape[-1]
        exact = tfd.OneHotCategorical(logits=logits, dtype=logits.dtype)
        relaxation = tfd.ExpRelaxedOneHotCategorical(self.temperature, logits=logits)
        source = self._from_condition(name)
        if source is not None:
            # A decoder scores the encoder's value, under the relaxation where the encoder sampled it.
            log_prob = tf.where(source.relaxed, relaxation.log_prob(source.log_value), exact.log_prob(source.value))
            self.records[name] = dataclasses.replace(source, distribution=exact, log_prob=log_prob)
            return source.value
        if self.conditioned_on is not None:
            # Drawn by a decoder but not by its encoder (e.g. generation): an exact sample.
            value = exact.sample()
            self.records[name] = Record(name, exact, value, exact.log_prob(value), "latent")
            return value
        rows = tf.shape(logits)[0]
        log_sample = relaxation.sample()
        latent_value = tf.exp(log_sample)
        relaxed = tf.ones([rows], tf.bool)
        kind = "latent"
        if self._enumerated(name):
            latent_value = tf.one_hot(self.enumeration[1], num_values, dtype=logits.dtype)
            relaxed = tf.zeros([rows], tf.bool)
            kind = "enumerated"
        observed = None
        value = latent_value
        if name in self.supervision:
            observed_value, observed = self._supervision(name, logits.shape[0])
            if observed_value.dtype.is_integer and observed_value.shape.rank == 1:
                observed_value = tf.one_hot(tf.cast(observed_value, tf.int32), num_values, dtype=logits.dtype)
            if observed_value.shape.rank != 2 or observed_value.shape[-1] != num_values:
                raise ValueError(
                    f"supervised value of {name!r}: expected int class ids [rows] or one-hot [rows, {num_values}], "
                    f"received {observed_value.dtype.name} {observed_value.shape}"
                )
            value = tf.where(observed[:, None], tf.cast(observed_value, logits.dtype), latent_value)
            relaxed = tf.logical_and(relaxed, tf.logical_not(observed))
            kind = "supervised"
        log_prob = tf.where(relaxed, relaxation.log_prob(log_sample), exact.log_prob(value))
        self.records[name] = Record(name, exact, value, log_prob, kind, observed, relaxed, log_sample)
        return value

    def _enumerated(self, name):
        return self.enumeration is not None and self.enumeration[0] == name

    def observe(self, name, distribution, value):
        """Scores always-observed data (e.g. the image) under ``distribution``; returns ``value``."""
        self._new(name)
        value = tf.convert_to_tensor(value, distribution.dtype)
        self.records[name] = Record(name, distribution, value, distribution.log_prob(value), "observed")
        return value
