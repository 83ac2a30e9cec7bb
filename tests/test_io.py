"""Model files: round trip, atomic writes, and refusal of corrupt or unsafe files."""

import json
import zipfile

import numpy as np
import pytest

from fastnn import MLPClassifier, load_model
from fastnn.errors import ModelFileError
from fastnn.io import FORMAT_VERSION, META_KEY, load_model_file, save_model_file


@pytest.fixture(scope="module")
def fitted(digits):
    return MLPClassifier((16,), max_iter=3, random_state=0).fit(digits.X_train, digits.y_train)


def test_round_trip_preserves_predictions_and_metadata(tmp_path, fitted, digits):
    path = tmp_path / "m.npz"
    fitted.save(path, metadata={"dataset": "digits"})
    loaded = load_model(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(digits.X_test), fitted.predict_proba(digits.X_test)
    )
    assert loaded.classes_.tolist() == fitted.classes_.tolist()
    assert loaded.loss_curve_ == fitted.loss_curve_ and loaded.n_iter_ == 3
    assert loaded.metadata_ == {"dataset": "digits"}
    assert loaded.get_params()["hidden_layer_sizes"] == (16,)
    _, meta, _ = load_model_file(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["layer_sizes"] == [64, 16, 10]


def test_string_labels_survive_a_round_trip(tmp_path, digits):
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    model = MLPClassifier((8,), max_iter=2, random_state=0).fit(
        digits.X_train, names[digits.y_train]
    )
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(digits.X_test), model.predict(digits.X_test))
    assert loaded.predict(digits.X_test[:1])[0] in names


def test_interrupted_save_keeps_the_previous_file(tmp_path, fitted, monkeypatch):
    path = tmp_path / "m.npz"
    fitted.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fitted.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def _good_arrays(tmp_path, fitted):
    fitted.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        return {k: z[k] for k in z.files}


def test_truncated_file(tmp_path, fitted):
    fitted.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="m.npz: not a readable fastnn model file"):
        load_model(tmp_path / "m.npz")


def test_pickled_object_inside_is_refused_without_running_it(tmp_path, fitted):
    arrays = _good_arrays(tmp_path, fitted)
    arrays["param_0"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelFileError, match="evil.npz: not a readable fastnn model file.*pickle"):
        load_model(tmp_path / "evil.npz")


def test_wrong_shapes(tmp_path, fitted):
    arrays = _good_arrays(tmp_path, fitted)
    arrays["param_2"] = arrays["param_2"][:5]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"parameter param_2 has shape \(5, 10\).*\(16, 10\)"):
        load_model(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "newer than this fastnn reads"),
        ({"format_version": None}, "no format_version"),
        ({"layer_sizes": [64, -1, 10]}, "layer_sizes must be a list of positive integers"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"classes": [0, 1]}, "one label per output unit"),
    ],
)
def test_bad_metadata(tmp_path, fitted, change, message):
    arrays = _good_arrays(tmp_path, fitted)
    meta = {**json.loads(str(arrays[META_KEY])), **change}
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "bad.npz")


def test_not_an_npz_and_not_fastnn(tmp_path):
    (tmp_path / "a.npz").write_text("not a zip")
    with pytest.raises(ModelFileError, match="a.npz: not a readable"):
        load_model(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", w=np.zeros(3))
    with pytest.raises(ModelFileError, match="b.npz: not a fastnn model file"):
        load_model(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as z:
        z.writestr(f"{META_KEY}.npy", b"garbage")
    with pytest.raises(ModelFileError, match="c.npz: corrupt metadata"):
        load_model(tmp_path / "c.npz")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.npz")


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model_file(tmp_path / "nope" / "m.npz", [np.zeros((2, 2))], {})
