"""multi_digit (Siddharth et al. 2017, multi-digit scenes): count, place and draw 0..K digits.

Trains ``tfssvae.models.MultiDigitModel`` on canvases composed by
``tfssvae.data.multi_digit`` from the digits of ``dataset`` (any digit source:
``"digits"``, the embedded 8x8 digits, by default; ``"idx:<dir>"`` for MNIST-format
data): ``train_canvases`` canvases from the source's training digits, composed once for
the seed, of which a fraction ``count_supervision`` (exactly ``round(fraction * n)``,
chosen by the seed) have their count observed; ``validation_size`` more canvases from
the training digits (-1: a tenth of ``train_canvases``, at most 5,000) choose the
checkpoint (best count accuracy), and ``test_canvases`` from the source's test digits
give the reported figures (count accuracy, reconstruction error, box IoU).  Batches mix
unlabelled and labelled canvases as M2's do (``labelled_batch_size``, -1: half the batch,
at most the labelled canvases); ``num_labels`` is not used (``count_supervision`` says
how many counts are observed).

``max_digits`` (K), ``glimpse_size`` and the network sizes are the model's;
``canvas_size`` and ``digit_sizes`` (smallest and largest digit side, pixels) are the
data's.

Variants: ``tiny``, a few steps of tiny networks on 24x24 canvases of at most two
digits, for tests and smoke runs.

Sized for a 2-core CPU: a step of 32 canvases takes about 0.085 s at float32 on the
shared 2-core machine (measured through the binary on 50x50 canvases, K = 3, with the
benchmarks running beside it: 625 steps in 72 s, 375 canvases/s; the recognition and the
digits run once a canvas, only the likelihood once per count).  The default 20 epochs
of 625 steps (12,500 steps) took 27 to 34 minutes pinned to one core of the shared
machine (17 to 25 minutes of CPU), with test count accuracy 0.944, mean box IoU 0.72 on
correctly counted canvases and reconstruction MSE 0.0073 (seed 0, 10 %, RESULTS.md).
Leave ``jit_compile`` off here: XLA makes the step about 8 times slower on this CPU
(0.45 s against 0.058 s for the bare step of 32, measured side by side; the spatial
transformer's gathers compile poorly).
"""
from tfssvae.configs import base

TINY = dict(epochs=1, batch_size=8, train_canvases=64, validation_size=16, test_canvases=16, canvas_size=24,
            digit_sizes=(10.0, 14.0),
            model=dict(max_digits=2, glimpse_size=8, what_dim=3, encoder_units=16, lstm_units=16, what_units=16,
                       canvas_filters=(4, 8)))  # the conv reader, so that a test covers it
VARIANTS = {
    "tiny": TINY,
}


def get_config(variant=None):
    config = base.run_config(
        model=dict(name="multi_digit",
                   max_digits=3,  # K: steps of the recurrence, the most digits on a canvas
                   glimpse_size=20,  # side of the glimpse read and written each step, pixels
                   what_dim=10,  # size of z_what
                   encoder_units=256,  # width of the features read from (canvas, residual) each step
                   # The reader's convs (3x3, stride 2); () is AIR's MLP.  Trained on the labelled
                   # canvases alone a CNN counts far better than that MLP (91.0 against 75.9 % at
                   # 10 %), but as the model's reader (16, 32, 32) gave 94.0 % against the MLP's
                   # 94.4 % (seed 0, 10 %) and 0.8x its speed (RESULTS.md, issue 13).
                   canvas_filters=(),
                   lstm_units=128,  # LSTM state
                   what_units=200,  # hidden width of the z_what encoder and of the glimpse decoder
                   alpha=10.0,  # weight of log q(count | x) of supervised canvases beyond the bound
                   presence_prior=0.5,  # p(step t present | step t-1 present) at the start
                   learn_presence_prior=True,  # learn those prior probabilities by the bound
                   where_prior_scale=1.0,  # std of p(z_where)'s shifts (unconstrained)
                   # p(z_where)'s scale: centred on the digits' mean side (24 of 50 pixels), and
                   # tight, as AIR's is: the likelihood cannot tell a small digit in a large
                   # glimpse from a large one, and under N(0, 1) the glimpses grew to 0.58 of the
                   # canvas against the digits' 0.48 (box IoU 0.61; 0.71 with this prior,
                   # 5-epoch runs, RESULTS.md, issue 13).
                   where_prior_side=0.48,  # glimpse side (canvas widths) at p(z_where)'s mean scale
                   where_prior_side_scale=0.1,  # std of p(z_where)'s scale (unconstrained)
                   num_samples=1,  # samples per (canvas, count) in the objective
                   variant="weighted"),  # the paper's estimator ("weighted") or log-mean-exp ("iw")
        dataset="digits",  # the digit source the canvases are composed from
        batch_size=32,
        # Adam 1e-3 diverged after 1,750 steps (training loss 331 -> 523 by step 7,000, the
        # count error 9 % -> 38 %); 2e-4 kept falling (RESULTS.md, issue 13).
        learning_rate=2e-4,
        epochs=20,  # 12,500 steps: about 34 minutes on one shared core
        validation_size=500,  # canvases from training digits choosing the checkpoint (count accuracy)
        count_supervision=0.1,  # fraction of training canvases whose count is observed, in [0, 1]
        canvas_size=50,  # canvas side, pixels
        digit_sizes=(20.0, 28.0),  # smallest and largest digit side, pixels
        train_canvases=10_000,  # training canvases, composed once for the seed
        test_canvases=1_000,  # canvases from the source's test digits for the reported figures
    )
    return base.apply_variant(config, variant, VARIANTS, "multi_digit.py")
