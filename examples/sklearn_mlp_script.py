"""An ordinary scikit-learn script, with no fastnn in it: a small grid search over an
MLPClassifier pipeline on the digits, and an MLPRegressor on the diabetes data. Run it as is
(scikit-learn), or accelerated with no change: ``python -m fastnn.accel
examples/sklearn_mlp_script.py``. It prints one JSON object of what it found."""

import json
import time

from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def digits_search(seed=0):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=seed, stratify=y)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(max_iter=100, random_state=seed))
    grid = {
        "mlpclassifier__hidden_layer_sizes": [(64,), (128,)],
        "mlpclassifier__alpha": [1e-4, 1e-2],
    }
    search = GridSearchCV(pipeline, grid, cv=3).fit(X_train, y_train)
    return {
        "best_params": {
            k: list(v) if isinstance(v, tuple) else v for k, v in search.best_params_.items()
        },
        "cv_accuracy": search.best_score_,
        "test_accuracy": search.score(X_test, y_test),
        "classes": search.classes_.tolist(),
        "proba_shape": list(search.predict_proba(X_test).shape),
    }


def diabetes_fit(seed=0):
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=seed)
    model = make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=(64,), learning_rate_init=0.01, max_iter=500, random_state=seed
        ),
    )
    model.fit(X_train, y_train)
    return {
        "test_r2": model.score(X_test, y_test),
        "n_iter": model[-1].n_iter_,
        "prediction_shape": list(model.predict(X_test).shape),
    }


def main():
    t0 = time.perf_counter()
    results = {"digits": digits_search(), "diabetes": diabetes_fit()}
    results["seconds"] = time.perf_counter() - t0
    return results


if __name__ == "__main__":
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    print(json.dumps(main()))
