//! Route configs: every error class with its file:line:col and key, and a
//! table of conditions evaluated against real corpus messages.

use medbus_config::route::compile_route;
use medbus_config::{parse, Subject};
use medbus_hl7::Message;

const LISTENER: &str =
    "[[listeners]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\ntopic = \"hl7.in\"\n";

fn errors(routes: &str) -> Vec<String> {
    let text = format!("{LISTENER}{routes}");
    match parse(&text, "r.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn route_error_table() {
    // LISTENER is 4 lines: a route's [[routes]] header is on line 5.
    let cases: &[(&str, &str)] = &[
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\ncolour = \"red\"\n",
            "r.toml:9:1: routes.colour: unknown field `colour`",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\nwhen = { message_type = \"\" }\n",
            "r.toml:9:25: routes[0].when.message_type: bad pattern \"\"",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\nwhen = { field = \"PID-8\", regex = \"(\" }\n",
            "r.toml:9:35: routes[0].when.regex: bad regex",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\nwhen = { field = \"PID8\", eq = \"F\" }\n",
            "r.toml:9:18: routes[0].when.field: bad field path \"PID8\"",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\nwhen = { field = \"PID-8\" }\n",
            "r.toml:9:18: routes[0].when.field: a field needs exactly one of eq, in, regex, exists",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\n[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"y\"]\n",
            "r.toml:10:8: routes[1].name: duplicate route name \"a\"",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = [\"hl7.in\", \"hl7.in\"]\nto = [\"x\"]\n",
            "r.toml:7:8: routes[0].from: topic \"hl7.in\" is listed twice",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.nobody\"\nto = [\"x\"]\n",
            "r.toml:7:8: routes[0].from: no listener or route writes to topic \"hl7.nobody\"",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x.{colour}\"]\n",
            "r.toml:8:7: routes[0].to[0]: unknown placeholder {colour}",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x.{resourceType}\"]\n",
            "r.toml:8:7: routes[0].to[0]: {resourceType} needs transform",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\ntransform = \"xml\"\nto = [\"x\"]\n",
            "r.toml:8:13: routes.transform: unknown variant `xml`",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"hl7.in\"]\n",
            "r.toml:8:7: routes[0].to[0]: route writes to its own source",
        ),
        (
            "[[routes]]\nname = \"a\"\nfrom = [\"hl7.in\", \"b.out\"]\nto = [\"a.out\"]\n\
             [[routes]]\nname = \"b\"\nfrom = \"a.out\"\nto = [\"b.out\"]\n",
            "r.toml:8:6: routes[0].to: routes form a cycle: a -> b -> a",
        ),
        (
            "[mapping]\ntime_zone = \"CET\"\n",
            "r.toml:6:13: mapping.time_zone: \"CET\" is not a UTC offset",
        ),
    ];
    for (routes, want) in cases {
        let got = errors(routes);
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "for {routes:?}\n want prefix {want:?}\n got {got:#?}"
        );
    }
    // A refused field path is the one problem: not also an "empty condition".
    let got = errors(
        "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\nto = [\"x\"]\nwhen = { field = \"PID-x8\", eq = \"M\" }\n",
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    // A good route is accepted, including a template source fed by another route.
    assert!(errors(
        "[[routes]]\nname = \"a\"\nfrom = \"hl7.in\"\ntransform = \"fhir-resources\"\nto = [\"fhir.{resourceType}\"]\n\
         [[routes]]\nname = \"b\"\nfrom = \"fhir.Observation\"\nwhen = { resource_type = \"Observation\" }\nto = [\"obs\"]\n"
    )
    .is_empty());
}

fn corpus(name: &str) -> Vec<u8> {
    let path = medbus_tests::corpus_dir()
        .join("microsoft-fhir-converter/input")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn conditions_against_corpus_messages() {
    // (condition, [(corpus file, expected)])
    let table: &[(&str, &[(&str, bool)])] = &[
        ("{ message_type = \"ADT^A0*\" }", &[("ADT01-23.hl7", true), ("ADT04-251.hl7", true), ("ORU-R01-01.hl7", false)]),
        ("{ message_type = [\"ORU^R01\", \"VXU^V04\"] }", &[("ORU-R01-01.hl7", true), ("VXU-V04-01.hl7", true), ("ADT01-23.hl7", false)]),
        ("{ field = \"PID-8\", eq = \"M\" }", &[("ADT01-23.hl7", true)]),
        ("{ field = \"PID-8\", in = [\"F\", \"U\"] }", &[("ADT01-23.hl7", false)]),
        ("{ field = \"PV1-2\", eq = \"E\" }", &[("ADT04-251.hl7", true), ("ADT01-23.hl7", false)]),
        ("{ field = \"PID-1\", exists = true }", &[("ADT01-23.hl7", true), ("ADT04-251.hl7", false)]),
        ("{ field = \"PID-1\", exists = false }", &[("ADT04-251.hl7", true), ("ADT01-23.hl7", false)]),
        ("{ field = \"OBX(2)-2\", eq = \"CE\" }", &[("VXU-V04-01.hl7", true)]),
        ("{ field = \"OBX(1)-2\", eq = \"CE\" }", &[("VXU-V04-01.hl7", false)]),
        ("{ field = \"OBX-2\", eq = \"CE\" }", &[("VXU-V04-01.hl7", true)]),
        ("{ field = \"OBX-3.1\", regex = \"^[0-9]+-[0-9]$\" }", &[("ORU-R01-01.hl7", true), ("ADT01-23.hl7", false)]),
        ("{ not = { message_type = \"ADT^*\" } }", &[("ORU-R01-01.hl7", true), ("ADT01-23.hl7", false)]),
        (
            "{ message_type = \"ADT^*\", any = [{ field = \"PID-8\", eq = \"F\" }, { field = \"PV1-2\", eq = \"I\" }] }",
            &[("ADT01-23.hl7", true), ("ORU-R01-01.hl7", false)],
        ),
        ("{ all = [{ sending_application = \"*\" }, { sending_facility = \"?*\" }] }", &[("ADT01-23.hl7", true)]),
        ("{ resource_type = \"Observation\" }", &[("ORU-R01-01.hl7", false)]),
    ];
    for (cond, cases) in table {
        let text = format!(
            "{LISTENER}[[routes]]\nname = \"t\"\nfrom = \"hl7.in\"\nto = [\"out\"]\nwhen = {cond}\n"
        );
        let config = parse(&text, "t.toml").unwrap_or_else(|e| panic!("{cond}: {e}"));
        let route = compile_route(&config.routes[0], "routes[0]")
            .unwrap_or_else(|e| panic!("{cond}: {e:?}"));
        for (file, want) in *cases {
            let bytes = corpus(file);
            let msg = Message::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            let got = route.condition.matches(&Subject {
                message: Some(&msg),
                resource_type: None,
            });
            assert_eq!(got, *want, "{cond} on {file}");
        }
    }
}
