"""What a trained network gets right and wrong: the confusion matrix, per-class metrics and the
test images it is most confidently wrong about.

With y the true labels and yhat = argmax P the predictions of n examples over k classes:

    confusion[i, j]  = #{examples of class i predicted as j}     (k, k); rows true, columns predicted
    precision_c      = confusion[c, c] / sum_i confusion[i, c]    of the examples called c, how many are c
    recall_c         = confusion[c, c] / sum_j confusion[c, j]    of the examples of c, how many were found
    accuracy_c       = (TP_c + TN_c) / n                          class c against the rest, as a binary task
    f1_c             = 2 precision_c recall_c / (precision_c + recall_c)

A class that is never predicted has no precision (None, not 0 or NaN); a class absent from the
labels has no recall. The overall accuracy is trace(confusion) / n.

"Most confidently wrong": the misclassified examples ordered by the probability the network gave
its (wrong) prediction, highest first -- the mistakes it was surest of, which are often mislabelled
or genuinely ambiguous digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.network import CLASSES, Params, softmax


@dataclass(frozen=True)
class ClassMetrics:
    label: int
    support: int  # examples of this class
    predicted: int  # examples predicted as this class
    correct: int  # true positives
    precision: float | None
    recall: float | None
    accuracy: float  # one-vs-rest
    f1: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "support": self.support, "predicted": self.predicted,
            "correct": self.correct, "precision": self.precision, "recall": self.recall,
            "accuracy": self.accuracy, "f1": self.f1,
        }


@dataclass(frozen=True)
class Mistake:
    """One misclassified example: where it is in the split, and what the network said."""

    index: int  # position in the split
    label: int  # the true class
    prediction: int
    probability: float  # P[prediction]
    label_probability: float  # P[label]
    image: np.ndarray | None = field(default=None, compare=False)  # (28, 28) uint8, for display

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "label": self.label, "prediction": self.prediction,
            "probability": self.probability, "label_probability": self.label_probability,
        }


@dataclass(frozen=True)
class EvalReport:
    split: str
    examples: int
    loss: float
    accuracy: float
    confusion: np.ndarray  # (k, k) int64, rows true, columns predicted
    per_class: tuple[ClassMetrics, ...]
    mistakes: tuple[Mistake, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split, "examples": self.examples, "loss": self.loss, "accuracy": self.accuracy,
            "per_class": [c.to_dict() for c in self.per_class],
            "confusion": self.confusion.tolist(),
            "errors": [m.to_dict() for m in self.mistakes],
        }


def confusion_matrix(y: np.ndarray, predictions: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """(k, k) int64 counts: entry [i, j] is the number of examples of class i predicted as j."""
    y, predictions = np.asarray(y, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if y.shape != predictions.shape:
        raise ValueError(f"labels {y.shape} and predictions {predictions.shape} differ in shape")
    return np.bincount(classes * y + predictions, minlength=classes * classes).reshape(classes, classes)


def class_metrics(confusion: np.ndarray) -> tuple[ClassMetrics, ...]:
    """Precision, recall, one-vs-rest accuracy and F1 of every class, from the confusion matrix."""
    n = int(confusion.sum())
    out = []
    for c in range(confusion.shape[0]):
        tp = int(confusion[c, c])
        support, predicted = int(confusion[c, :].sum()), int(confusion[:, c].sum())
        tn = n - support - predicted + tp  # neither true c nor predicted c
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out.append(ClassMetrics(
            label=c, support=support, predicted=predicted, correct=tp, precision=precision,
            recall=recall, accuracy=(tp + tn) / n if n else 0.0, f1=f1,
        ))
    return tuple(out)


def confident_mistakes(
    P: np.ndarray, y: np.ndarray, count: int, images: np.ndarray | None = None
) -> tuple[Mistake, ...]:
    """The ``count`` misclassified rows of P (n, k) with the highest probability on the wrong
    prediction; ties keep the split's order."""
    predictions = P.argmax(axis=1)  # (n,)
    wrong = np.flatnonzero(predictions != y)  # (m,)
    confidence = P[wrong, predictions[wrong]]  # (m,)
    order = wrong[np.argsort(-confidence, kind="stable")][: max(count, 0)]
    return tuple(
        Mistake(
            index=int(i), label=int(y[i]), prediction=int(predictions[i]),
            probability=float(P[i, predictions[i]]), label_probability=float(P[i, y[i]]),
            image=None if images is None else np.asarray(images[i]),
        )
        for i in order
    )


def build_report(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    split: str,
    *,
    errors: int = 0,
    images: np.ndarray | None = None,
) -> EvalReport:
    """Everything ``mlp eval`` shows, from one pass of the evaluation training uses
    (``nn.evaluation.loss_and_accuracy``) over X (n, d) with labels y (n,).

    ``errors``: how many confident mistakes to keep; ``images`` (n, 28, 28) are attached to them
    for display."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    scores = np.empty((n, params.W2.shape[1]), dtype=np.float64)  # (n, k), each row's max is 0
    with np.errstate(over="ignore", invalid="ignore"):
        loss, accuracy = loss_and_accuracy(params, X, y, scores=scores)
        P = softmax(scores)  # (n, k)
    confusion = confusion_matrix(y, P.argmax(axis=1), P.shape[1])
    return EvalReport(
        split=split, examples=n, loss=loss, accuracy=accuracy, confusion=confusion,
        per_class=class_metrics(confusion), mistakes=confident_mistakes(P, y, errors, images),
    )
