from dataclasses import fields

import pytest
from ernie_sm.contract import hyperparams
from ernie_sm.contract.errors import HyperparameterError


def test_spec_and_dataclass_name_the_same_hyperparameters():
    assert [f.name for f in fields(hyperparams.Hyperparameters)] == list(hyperparams.SPECS)


def test_defaults_parse_and_original_pretrain_sh_values_are_accepted():
    original = {
        "use_cuda": "True",
        "is_distributed": "False",
        "use_fast_executor": "True",
        "weight_sharing": "True",
        "in_tokens": "true",
        "batch_size": "8192",
        "vocab_path": "./config/vocab.txt",
        "train_filelist": "./data/train_filelist",
        "valid_filelist": "./data/valid_filelist",
        "validation_steps": "100",
        "num_train_steps": "1000000",
        "checkpoints": "./checkpoints",
        "save_steps": "10000",
        "ernie_config_path": "./config/ernie_config.json",
        "learning_rate": "1e-4",
        "use_fp16": "false",
        "weight_decay": "0.01",
        "max_seq_len": "512",
        "skip_steps": "10",
        "warmup_steps": "10000",
        "epoch": "100",
    }
    hp = hyperparams.parse(original)
    assert hp.batch_size == 8192 and hp.in_tokens is True and hp.use_fp16 is False
    assert hp.learning_rate == pytest.approx(1e-4)
    assert hp.vocab_path == "./config/vocab.txt"
    default = hyperparams.parse({})
    assert default.max_grad_norm == 1.0 and default.weight_decay == 0.01


def test_sagemaker_reserved_keys_are_ignored():
    hp = hyperparams.parse({"sagemaker_program": "x.py", "sagemaker_region": '"us-east-1"'})
    assert hp.batch_size == 8192


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("batch_size", "lots", "batch_size: bad value 'lots': expected an integer"),
        ("batch_size", "0", "batch_size: bad value '0': expected an integer > 0"),
        ("batch_size", "8192.5", "expected an integer"),
        ("use_fp16", "maybe", "use_fp16: bad value 'maybe': expected true or false"),
        ("learning_rate", "nan", "learning_rate: bad value 'nan': expected a finite number"),
        ("learning_rate", "-1", "expected a finite number >= 0"),
        ("amp_dtype", "fp8", "expected one of auto, float16, bfloat16"),
        (
            "lerning_rate",
            "0.1",
            "lerning_rate: unknown hyperparameter (did you mean learning_rate?)",
        ),
    ],
)
def test_bad_names_and_values_are_named(name, value, expected):
    with pytest.raises(HyperparameterError) as err:
        hyperparams.parse({name: value})
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "name", ["vocab_path", "train_filelist", "valid_filelist", "ernie_config_path"]
)
def test_a_path_no_file_system_can_look_up_is_refused_by_name(name):
    # SageMaker takes values of 2,500 characters; a file system, names of 255 bytes.
    assert hyperparams.validate({name: "/".join(["d" * 255] * 9)}) == {}
    for value, says in [
        ("x" * 300, "got a name of 300 bytes"),
        ("a/" + "é" * 128, "got a name of 256 bytes"),
        ("a\0b", "NUL"),
    ]:
        assert says in hyperparams.validate({name: value})[name]


def test_non_string_values_are_rejected_as_sagemaker_would_send_strings():
    problems = hyperparams.validate({"batch_size": 8192})
    assert "must be a string" in problems["batch_size"]


def test_every_problem_is_reported_at_once():
    problems = hyperparams.validate({"batch_size": "x", "epoch": "-2", "use_cuda": "true"})
    assert set(problems) == {"batch_size", "epoch"}


def test_defaults_round_trip():
    assert hyperparams.parse(hyperparams.defaults()) == hyperparams.parse({})
    assert len(hyperparams.defaults()) <= 100  # SageMaker's limit on hyperparameter entries


def test_values_json_encoded_by_the_sagemaker_sdk_are_accepted():
    hp = hyperparams.parse({"ernie_config_path": '"ernie-tiny"', "batch_size": "4096"})
    assert hp.ernie_config_path == "ernie-tiny" and hp.batch_size == 4096
    assert hyperparams.parse({"use_fp16": '"true"'}).use_fp16 is True


def test_defaults_are_the_original_ernies_where_the_names_are_its():
    # ernie/pretrain_args.py of PaddlePaddle/ERNIE (branch repro), and batch_size /
    # in_tokens as its script/zh_task/pretrain.sh passes them.
    original = {
        "epoch": 100,
        "learning_rate": 0.0001,
        "weight_decay": 0.01,
        "num_train_steps": 1000000,
        "warmup_steps": 5000,
        "save_steps": 10000,
        "validation_steps": 1000,
        "use_fp16": False,
        "use_dynamic_loss_scaling": True,
        "init_loss_scaling": 102400,
        "incr_every_n_steps": 100,
        "decr_every_n_nan_or_inf": 2,
        "incr_ratio": 2.0,
        "decr_ratio": 0.8,
        "skip_steps": 10,
        "max_seq_len": 512,
        "weight_sharing": True,
        "generate_neg_sample": False,
        "batch_size": 8192,
        "in_tokens": True,
    }
    default = hyperparams.parse({})
    assert {name: getattr(default, name) for name in original} == original


def test_random_seed_is_bounded_by_what_paddle_seed_takes():
    assert hyperparams.parse({"random_seed": str(2**64 - 1)}).random_seed == hyperparams.MAX_SEED
    with pytest.raises(HyperparameterError, match=r"from 0 to 18446744073709551615 \(2\*\*64"):
        hyperparams.parse({"random_seed": str(2**64)})


def test_paddle_seed_takes_the_largest_seed_and_refuses_the_next():
    paddle = pytest.importorskip("paddle")
    paddle.seed(hyperparams.MAX_SEED)
    with pytest.raises(TypeError):
        paddle.seed(hyperparams.MAX_SEED + 1)
    paddle.seed(0)


def test_evaluate_has_its_own_spec_table_on_the_same_machinery():
    assert [f.name for f in fields(hyperparams.EvalHyperparameters)] == list(hyperparams.EVAL_SPECS)
    default = hyperparams.parse_eval({})
    assert (default.learning_rate, default.num_train_steps, default.batch_size) == (5e-5, 1000, 32)
    assert (default.max_seq_len, default.eval_steps, default.patience) == (128, 100, 5)
    assert (default.weight_decay, default.random_seed) == (0.01, 0)
    assert default.use_cuda is True and default.run_baseline is True
    assert hyperparams.parse_eval(hyperparams.defaults(hyperparams.EVAL_SPECS)) == default
    with pytest.raises(HyperparameterError, match=r"batch_size: bad value '0'"):
        hyperparams.parse_eval({"batch_size": "0"})
    with pytest.raises(HyperparameterError, match=r"epoch: unknown hyperparameter"):
        hyperparams.parse_eval({"epoch": "3"})  # a pretraining name, not an evaluation one
    assert hyperparams.parse_eval({"sagemaker_program": "x"}) == default


def test_each_hyperparameter_is_declared_once_on_its_dataclass_field():
    for declared, specs, parse in (
        (hyperparams.Hyperparameters, hyperparams.SPECS, hyperparams.parse),
        (hyperparams.EvalHyperparameters, hyperparams.EVAL_SPECS, hyperparams.parse_eval),
    ):
        assert specs == hyperparams.specs_of(declared)
        assert {name: spec.type for name, spec in specs.items()} == {
            f.name: f.type for f in fields(declared)
        }
        assert declared() == parse({})  # a field's default is its default string parsed
    assert hyperparams.Hyperparameters().tasks is not hyperparams.Hyperparameters().tasks
