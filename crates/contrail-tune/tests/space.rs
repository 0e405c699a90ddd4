//! Search-space parsing: a valid space with conditions, and a typed error naming the
//! parameter for each kind of mistake.

use contrail_tune::{Kind, SearchSpace, SpaceError};

const SPACE: &str = r#"
[learning_rate]
type = "float"
low = 0.001
high = 0.3
log = true

[num_leaves]
type = "int"
low = 8
high = 512
log = true

[boosting]
type = "categorical"
choices = ["gbdt", "goss", "dart"]

[top_rate]
type = "float"
low = 0.05
high = 0.5
condition = { parameter = "boosting", equals = "goss" }

[drop_rate]
type = "float"
low = 0.01
high = 0.5
condition = { parameter = "boosting", in = ["dart"] }

[skip_drop]
type = "int"
low = 0
high = 3
condition = { parameter = "drop_rate_mode", equals = 1 }

[drop_rate_mode]
type = "int"
low = 0
high = 1
condition = { parameter = "boosting", equals = "dart" }
"#;

#[test]
fn parses_types_logs_and_chained_conditions() {
    let s = SearchSpace::from_toml_str(SPACE).expect("valid");
    assert_eq!(s.dims(), 7);
    let names: Vec<&str> = s.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "boosting",
            "drop_rate",
            "drop_rate_mode",
            "learning_rate",
            "num_leaves",
            "skip_drop",
            "top_rate"
        ]
    );
    assert!(matches!(s.params()[3].kind, Kind::Float { log: true, .. }));
    assert!(matches!(
        s.params()[4].kind,
        Kind::Int {
            low: 8,
            high: 512,
            log: true
        }
    ));
    // boosting = dart (index 2), drop_rate_mode = 1 -> skip_drop active; top_rate inactive.
    let mut x = vec![2.0, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5];
    s.canonicalize(&mut x);
    let p = s.decode(&x);
    assert_eq!(p["boosting"], "dart");
    assert!(p.contains_key("skip_drop") && p.contains_key("drop_rate"));
    assert!(!p.contains_key("top_rate"));
    // boosting = gbdt: the whole dart chain is inactive.
    let mut x = vec![0.0, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5];
    s.canonicalize(&mut x);
    let p = s.decode(&x);
    assert_eq!(p.len(), 3, "{p:?}");
    let back = s.encode(&p).expect("round trip");
    let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || a == b;
    assert!(
        back.iter().zip(&x).all(|(a, b)| same(*a, *b)),
        "{back:?} {x:?}"
    );
    // Parameters that do not fit are refused, naming the parameter.
    let mut bad = p.clone();
    bad.insert("top_rate".into(), 0.3.into());
    assert!(s.encode(&bad).expect_err("inactive").contains("top_rate"));
    let mut bad = p.clone();
    bad.insert("num_leaves".into(), 4.into());
    assert!(s
        .encode(&bad)
        .expect_err("out of range")
        .contains("num_leaves"));
    // Log scale: the middle of the cube is the geometric mean.
    let mut x = vec![0.0, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5];
    s.canonicalize(&mut x);
    let lr = s.decode(&x)["learning_rate"].as_f64().expect("float");
    assert!((lr - (0.001f64 * 0.3).sqrt()).abs() < 1e-12);
}

fn err(text: &str) -> SpaceError {
    SearchSpace::from_toml_str(text).expect_err(text)
}

#[test]
fn bad_spaces_are_typed_errors_naming_the_parameter() {
    let p = |e: &SpaceError| e.to_string();
    let e = err("[a]\ntype = \"float\"\nlow = 1.0\nhigh = 1.0\n");
    assert!(
        matches!(&e, SpaceError::EmptyRange { parameter, .. } if parameter == "a"),
        "{e}"
    );
    let e = err("[lr]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nlog = true\n");
    assert!(
        matches!(&e, SpaceError::LogNonPositive { parameter, .. } if parameter == "lr"),
        "{e}"
    );
    let e = err("[n]\ntype = \"int\"\nlow = 0\nhigh = 10\nlog = true\n");
    assert!(
        matches!(&e, SpaceError::LogNonPositive { parameter, .. } if parameter == "n"),
        "{e}"
    );
    let e = err("[c]\ntype = \"categorical\"\nchoices = []\n");
    assert!(
        matches!(&e, SpaceError::EmptyChoices { parameter } if parameter == "c"),
        "{e}"
    );
    let e = err("[c]\ntype = \"categorical\"\nchoices = [\"a\", \"a\"]\n");
    assert!(
        matches!(&e, SpaceError::DuplicateChoice { parameter, .. } if parameter == "c"),
        "{e}"
    );
    let e = err("[a]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nstep = 0.1\n");
    assert!(
        matches!(&e, SpaceError::UnknownKey { parameter, key } if parameter == "a" && key == "step"),
        "{e}"
    );
    let e = err("[a]\ntype = \"double\"\nlow = 0.0\nhigh = 1.0\n");
    assert!(
        matches!(&e, SpaceError::UnknownType { parameter, .. } if parameter == "a"),
        "{e}"
    );
    let e = err("[a]\ntype = \"float\"\nhigh = 1.0\n");
    assert!(
        matches!(&e, SpaceError::MissingKey { parameter, key: "low" } if parameter == "a"),
        "{e}"
    );
    let e = err("[a]\ntype = \"int\"\nlow = 0.5\nhigh = 3\n");
    assert!(
        matches!(&e, SpaceError::WrongType { parameter, .. } if parameter == "a"),
        "{e}"
    );
    let e = err("[a]\ntype = \"categorical\"\nchoices = [1]\nlow = 0\n");
    assert!(
        matches!(&e, SpaceError::NotApplicable { parameter, key: "low", .. } if parameter == "a"),
        "{e}"
    );
    let e = err("a = [1, 2]\n");
    assert!(
        matches!(&e, SpaceError::NotATable { parameter } if parameter == "a"),
        "{e}"
    );
    // A bare value is a fixed parameter: one choice.
    let s = SearchSpace::from_toml_str(
        "a = 3\nb = \"x\"\n[c]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n",
    )
    .expect("fixed values");
    assert_eq!(s.dims(), 3);
    assert_eq!(
        s.params()[0].kind,
        Kind::Categorical {
            choices: vec![serde_json::json!(3)]
        }
    );
    assert_eq!(
        s.params()[1].kind,
        Kind::Categorical {
            choices: vec![serde_json::json!("x")]
        }
    );
    assert!(matches!(err(""), SpaceError::Empty));
    assert!(matches!(err("[a\n"), SpaceError::Toml(_)));
    // Conditions.
    let cat = "[b]\ntype = \"categorical\"\nchoices = [\"x\", \"y\"]\n";
    let e = err(&format!("{cat}[a]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\ncondition = {{ parameter = \"zz\", equals = \"x\" }}\n"));
    assert!(
        matches!(&e, SpaceError::UnknownConditionParent { parameter, parent } if parameter == "a" && parent == "zz"),
        "{e}"
    );
    let e = err(&format!("{cat}[a]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\ncondition = {{ parameter = \"b\", equals = \"w\" }}\n"));
    assert!(
        matches!(&e, SpaceError::ConditionValue { parameter, .. } if parameter == "a"),
        "{e}"
    );
    let e = err(&format!(
        "{cat}[a]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\ncondition = {{ parameter = \"b\" }}\n"
    ));
    assert!(
        matches!(&e, SpaceError::ConditionShape { parameter } if parameter == "a"),
        "{e}"
    );
    let e = err("[a]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n[b]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\ncondition = { parameter = \"a\", equals = 1 }\n");
    assert!(
        matches!(&e, SpaceError::ConditionParentKind { parameter, .. } if parameter == "b"),
        "{e}"
    );
    let e = err("[a]\ntype = \"int\"\nlow = 0\nhigh = 1\ncondition = { parameter = \"b\", equals = 1 }\n[b]\ntype = \"int\"\nlow = 0\nhigh = 1\ncondition = { parameter = \"a\", equals = 1 }\n");
    assert!(matches!(&e, SpaceError::ConditionCycle { .. }), "{e}");
    assert!(
        p(&e).contains("a -> b -> a") || p(&e).contains("b -> a -> b"),
        "{e}"
    );
    let e = err(
        "[a]\ntype = \"int\"\nlow = 0\nhigh = 1\ncondition = { parameter = \"a\", equals = 1 }\n",
    );
    assert!(
        matches!(&e, SpaceError::ConditionCycle { parameter, .. } if parameter == "a"),
        "{e}"
    );
}
