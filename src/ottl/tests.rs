use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};

use super::{Condition, ConditionSet, ContextKind, ParseError};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s("checkout")),
            kv("replicas", Value::IntValue(3)),
        ],
        dropped_attributes_count: 1,
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.weir.test".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", s("x"))],
        dropped_attributes_count: 2,
    }
}

fn span() -> Span {
    Span {
        trace_id: (1..=16).collect(),
        span_id: vec![0xab; 8],
        parent_span_id: vec![],
        trace_state: "k=v".into(),
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.status_code", Value::IntValue(503)),
            kv("ratio", Value::DoubleValue(0.5)),
            kv("retry", Value::BoolValue(true)),
            kv("raw", Value::BytesValue(vec![1, 2])),
            kv(
                "nested",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", s("deep"))],
                }),
            ),
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(s("first")),
                    }],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ],
        dropped_attributes_count: 4,
        dropped_events_count: 5,
        dropped_links_count: 6,
        status: Some(Status {
            message: "upstream down".into(),
            code: 2,
        }),
        ..Default::default()
    }
}

fn event() -> span::Event {
    span::Event {
        time_unix_nano: 3_000,
        name: "exception".into(),
        attributes: vec![kv("exception.type", s("IOError"))],
        dropped_attributes_count: 7,
    }
}

fn log() -> LogRecord {
    LogRecord {
        time_unix_nano: 10,
        observed_time_unix_nano: 11,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue {
            value: Some(s("disk full on /var")),
        }),
        attributes: vec![kv("log.file", s("app.log"))],
        dropped_attributes_count: 8,
        flags: 1,
        trace_id: vec![0xff; 16],
        span_id: vec![],
        event_name: "ev".into(),
    }
}

fn eval(expr: &str, ctx: ContextKind) -> bool {
    let c = match Condition::parse(expr, ctx) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let (r, sc, sp, ev, lg) = (resource(), scope(), span(), event(), log());
    match ctx {
        ContextKind::Span => c.eval_span(Some(&r), Some(&sc), &sp),
        ContextKind::SpanEvent => c.eval_span_event(Some(&r), Some(&sc), &sp, &ev),
        ContextKind::Log => c.eval_log(Some(&r), Some(&sc), &lg),
        ContextKind::Resource => c.eval_resource(Some(&r)),
        ContextKind::Scope => c.eval_scope(Some(&r), Some(&sc)),
        // The metric contexts have their own tests (the filter processor's).
        ContextKind::Metric | ContextKind::DataPoint => false,
    }
}

fn check(ctx: ContextKind, cases: &[(&str, bool)]) {
    for (expr, want) in cases {
        assert_eq!(eval(expr, ctx), *want, "{ctx:?}: {expr}");
    }
}

#[test]
fn span_paths() {
    check(
        ContextKind::Span,
        &[
            (r#"name == "GET /cart""#, true),
            (r#"span.name == "GET /cart""#, true),
            ("kind == SPAN_KIND_SERVER", true),
            ("kind == 2", true),
            ("status.code == STATUS_CODE_ERROR", true),
            (r#"status.message == "upstream down""#, true),
            (r#"attributes["http.method"] == "GET""#, true),
            (r#"attributes["http.status_code"] >= 500"#, true),
            (r#"resource.attributes["service.name"] == "checkout""#, true),
            (r#"resource.dropped_attributes_count == 1"#, true),
            (r#"instrumentation_scope.name == "io.weir.test""#, true),
            (r#"instrumentation_scope.version == "1.2.3""#, true),
            (r#"scope.version == "1.2.3""#, true),
            (
                r#"instrumentation_scope.attributes["scope.attr"] == "x""#,
                true,
            ),
            (
                r#"instrumentation_scope.dropped_attributes_count == 2"#,
                true,
            ),
            (
                r#"trace_id.string == "0102030405060708090a0b0c0d0e0f10""#,
                true,
            ),
            (r#"span_id.string == "abababababababab""#, true),
            // An absent id is the all-zero pdata id, encoded as upstream does.
            (r#"parent_span_id.string == "0000000000000000""#, true),
            (r#"trace_state == "k=v""#, true),
            ("start_time_unix_nano == 1000", true),
            ("end_time_unix_nano > start_time_unix_nano", true),
            ("dropped_attributes_count == 4", true),
            ("dropped_events_count == 5", true),
            ("dropped_links_count == 6", true),
            ("flags == 0", true),
            (r#"attributes["nested"]["inner"] == "deep""#, true),
            (r#"attributes["list"][0] == "first""#, true),
            (r#"attributes["list"][1] == nil"#, true),
            (r#"attributes["nested"]["missing"] == nil"#, true),
        ],
    );
}

#[test]
fn math_times_and_durations_as_upstream() {
    // The span: start 1000 ns, end 5000 ns, http.status_code 503.
    check(
        ContextKind::Span,
        &[
            ("end_time_unix_nano - start_time_unix_nano == 4000", true),
            (r#"end_time - start_time > Duration("1us")"#, true),
            (
                r#"(end_time - start_time) < Duration("1s") and status.code == STATUS_CODE_ERROR"#,
                true,
            ),
            (r#"(end_time - start_time) >= Duration("5us")"#, false),
            (r#"attributes["http.status_code"] / 100 == 5"#, true),
            (r#"attributes["http.status_code"] * 2.0 > 1000"#, true),
            ("kind + 1 == 3", true),
            ("2 + 3 * 4 == 14", true),
            ("(2 + 3) * 4 == 20", true),
            ("end_time > start_time", true),
            ("Now() > end_time", true),
            // A time and an int do not compare; math on a string is nil.
            ("end_time > 5", false),
            ("name + 1 == 2", false),
            ("kind / 0 == 1", false),
            // Parentheses still group conditions.
            (
                r#"(name == "x") or (kind == SPAN_KIND_SERVER and (attributes["http.status_code"] == 503))"#,
                true,
            ),
        ],
    );
    let e = err(
        r#"(end_time - start_time < Duration("1s")"#,
        ContextKind::Span,
    );
    assert!(e.message.contains("expected \")\""), "{}", e.message);
    let e = err(
        r#"Duration("soon") > end_time - start_time"#,
        ContextKind::Span,
    );
    assert_eq!(e.message, "invalid duration \"soon\"");
}

#[test]
fn span_event_paths() {
    check(
        ContextKind::SpanEvent,
        &[
            (r#"name == "exception""#, true),
            (r#"spanevent.name == "exception""#, true),
            ("time_unix_nano == 3000", true),
            (r#"attributes["exception.type"] == "IOError""#, true),
            ("dropped_attributes_count == 7", true),
            (r#"span.name == "GET /cart""#, true),
            (r#"span.attributes["http.method"] == "GET""#, true),
            ("span.kind == SPAN_KIND_SERVER", true),
            ("span.status.code == STATUS_CODE_ERROR", true),
            (
                r#"span.trace_id.string == "0102030405060708090a0b0c0d0e0f10""#,
                true,
            ),
            (r#"resource.attributes["service.name"] == "checkout""#, true),
            (r#"instrumentation_scope.name == "io.weir.test""#, true),
            // The event's attributes, not the span's.
            (r#"attributes["http.method"] == nil"#, true),
        ],
    );
}

#[test]
fn log_paths() {
    check(
        ContextKind::Log,
        &[
            (r#"body == "disk full on /var""#, true),
            (r#"IsMatch(body, "disk full")"#, true),
            ("severity_number == SEVERITY_NUMBER_ERROR", true),
            ("severity_number >= SEVERITY_NUMBER_WARN", true),
            ("severity_number < SEVERITY_NUMBER_FATAL", true),
            (r#"severity_text == "ERROR""#, true),
            (r#"attributes["log.file"] == "app.log""#, true),
            (r#"resource.attributes["service.name"] == "checkout""#, true),
            (r#"instrumentation_scope.name == "io.weir.test""#, true),
            ("time_unix_nano == 10", true),
            ("observed_time_unix_nano == 11", true),
            (
                r#"trace_id.string == "ffffffffffffffffffffffffffffffff""#,
                true,
            ),
            (r#"span_id.string == "0000000000000000""#, true),
            ("flags == 1", true),
            ("dropped_attributes_count == 8", true),
            (r#"event_name == "ev""#, true),
            (r#"log.severity_text == "ERROR""#, true),
        ],
    );
}

#[test]
fn resource_paths() {
    check(
        ContextKind::Resource,
        &[
            (r#"attributes["service.name"] == "checkout""#, true),
            (r#"resource.attributes["service.name"] == "checkout""#, true),
            (r#"attributes["replicas"] == 3"#, true),
            ("dropped_attributes_count == 1", true),
            (r#"attributes["missing"] == nil"#, true),
        ],
    );
}

#[test]
fn severity_numbers_are_the_otlp_values() {
    let cases = [
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
        ("SEVERITY_NUMBER_TRACE", 1),
        ("SEVERITY_NUMBER_TRACE4", 4),
        ("SEVERITY_NUMBER_DEBUG", 5),
        ("SEVERITY_NUMBER_INFO", 9),
        ("SEVERITY_NUMBER_INFO2", 10),
        ("SEVERITY_NUMBER_WARN", 13),
        ("SEVERITY_NUMBER_ERROR", 17),
        ("SEVERITY_NUMBER_ERROR3", 19),
        ("SEVERITY_NUMBER_FATAL", 21),
        ("SEVERITY_NUMBER_FATAL4", 24),
    ];
    for (sym, n) in cases {
        assert!(eval(&format!("{sym} == {n}"), ContextKind::Log), "{sym}");
    }
}

#[test]
fn span_enums() {
    let cases = [
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_SERVER", 2),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
        ("STATUS_CODE_UNSET", 0),
        ("STATUS_CODE_OK", 1),
        ("STATUS_CODE_ERROR", 2),
    ];
    for ctx in [ContextKind::Span, ContextKind::SpanEvent] {
        for (sym, n) in cases {
            assert!(eval(&format!("{sym} == {n}"), ctx), "{sym}");
        }
    }
}

#[test]
fn comparison_semantics() {
    check(
        ContextKind::Span,
        &[
            // nil: equal only to nil; a missing attribute and an attribute without value are nil.
            ("nil == nil", true),
            ("nil != nil", false),
            ("nil <= nil", true),
            ("nil < nil", false),
            (r#"attributes["missing"] == nil"#, true),
            (r#"attributes["empty"] == nil"#, true),
            (r#"attributes["missing"] == "x""#, false),
            (r#"attributes["missing"] != "x""#, true),
            (r#"attributes["missing"] < 1"#, false),
            (r#"attributes["missing"] >= 1"#, false),
            (r#"nil != attributes["http.method"]"#, true),
            // Different types: only != holds.
            (r#"attributes["http.status_code"] == "503""#, false),
            (r#"attributes["http.status_code"] != "503""#, true),
            (r#"attributes["http.status_code"] > "1""#, false),
            (r#"attributes["retry"] == 1"#, false),
            (r#"attributes["retry"] != 1"#, true),
            (r#"name == 1"#, false),
            // int/float mix numerically.
            (r#"attributes["http.status_code"] == 503.0"#, true),
            (r#"attributes["ratio"] < 1"#, true),
            (r#"attributes["ratio"] == 0.5"#, true),
            (r#"attributes["ratio"] > -1"#, true),
            ("1 == 1.0", true),
            ("2 > 1.5", true),
            ("-3 < -2", true),
            ("+3 == 3", true),
            (".5 == 0.5", true),
            ("1.5e2 == 150", true),
            // strings compare lexically (bytewise).
            (r#""a" < "b""#, true),
            (r#""B" < "a""#, true),
            (r#""abc" >= "abd""#, false),
            (r#"name > "GET""#, true),
            // bools: false < true.
            ("false < true", true),
            ("true <= true", true),
            (r#"attributes["retry"] == true"#, true),
            // bytes.
            (r#"attributes["raw"] == 0x0102"#, true),
            (r#"attributes["raw"] < 0x0103"#, true),
            (r#"attributes["raw"] == "0102""#, false),
            // maps and lists: equality only.
            (r#"attributes["nested"] == attributes["nested"]"#, true),
            (r#"attributes["nested"] != attributes["list"]"#, true),
            (r#"attributes["nested"] <= attributes["nested"]"#, false),
            (r#"attributes["list"] == attributes["list"]"#, true),
        ],
    );
}

#[test]
fn boolean_logic_and_precedence() {
    check(
        ContextKind::Span,
        &[
            ("true", true),
            ("false", false),
            ("not false", true),
            ("not true", false),
            ("true or false and false", true),
            ("(true or false) and false", false),
            ("false and false or true", true),
            ("false and (false or true)", false),
            ("not true or true", true),
            ("not (true or true)", false),
            ("not false and false", false),
            (
                r#"name == "GET /cart" and (kind == SPAN_KIND_CLIENT or kind == SPAN_KIND_SERVER)"#,
                true,
            ),
            (r#"not attributes["missing"] == "x""#, true),
            ("true == true", true),
            ("true != false and 1 < 2", true),
            ("((true))", true),
            ("IsMatch(name, \"^GET\") == true", true),
            ("not IsMatch(name, \"^POST\")", true),
        ],
    );
}

#[test]
fn converters() {
    check(
        ContextKind::Span,
        &[
            (r#"IsMatch(name, "^GET /")"#, true),
            (r#"IsMatch(name, "^POST")"#, false),
            (r#"IsMatch(attributes["http.method"], "G.T")"#, true),
            (r#"IsMatch(attributes["missing"], ".*")"#, false),
            // Non-strings are formatted first, as upstream does with strconv.
            (
                r#"IsMatch(attributes["http.status_code"], "^5\\d\\d$")"#,
                true,
            ),
            (r#"IsMatch(attributes["retry"], "^true$")"#, true),
            (r#"IsMatch(attributes["ratio"], "^0\\.5$")"#, true),
            (r#"IsMatch("string", ".*ring")"#, true),
            (r#"IsMatch(trace_id.string, "^0102")"#, true),
            (r#"IsString(name)"#, true),
            (r#"IsString(trace_id.string)"#, true),
            (r#"IsString(kind)"#, false),
            (r#"IsInt(kind)"#, true),
            (r#"IsInt(attributes["ratio"])"#, false),
            (r#"IsDouble(attributes["ratio"])"#, true),
            (r#"IsBool(attributes["retry"])"#, true),
            (r#"IsBool(attributes["missing"])"#, false),
            (r#"IsMap(attributes["nested"])"#, true),
            (r#"IsMap(attributes)"#, true),
            (r#"IsMap(name)"#, false),
            (r#"IsList(attributes["list"])"#, true),
            (r#"IsString(attributes["missing"])"#, false),
        ],
    );
}

#[test]
fn string_escapes() {
    let c = Condition::parse(r#"name == "a\"b\\c""#, ContextKind::Span);
    assert!(c.is_ok());
    let sp = Span {
        name: r#"a"b\c"#.into(),
        ..Default::default()
    };
    assert!(c.is_ok_and(|c| c.eval_span(None, None, &sp)));
}

#[test]
fn absent_resource_and_scope_read_as_empty() {
    let sp = span();
    for (expr, want) in [
        (r#"resource.attributes["service.name"] == nil"#, true),
        (r#"instrumentation_scope.name == """#, true),
        (r#"name == "GET /cart""#, true),
    ] {
        let c = Condition::parse(expr, ContextKind::Span);
        assert!(
            c.is_ok_and(|c| c.eval_span(None, None, &sp) == want),
            "{expr}"
        );
    }
}

#[test]
fn missing_status_is_unset() {
    let sp = Span::default();
    let c = Condition::parse("status.code == STATUS_CODE_UNSET", ContextKind::Span);
    assert!(c.is_ok_and(|c| c.eval_span(None, None, &sp)));
}

fn err(expr: &str, ctx: ContextKind) -> ParseError {
    match Condition::parse(expr, ctx) {
        Ok(c) => panic!("{expr:?} parsed: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn parse_errors() {
    use ContextKind::*;
    let cases: &[(&str, ContextKind, usize, &str)] = &[
        ("", Span, 1, "empty condition"),
        ("   ", Span, 1, "empty condition"),
        (
            r#"attributes["k"]"#,
            Span,
            16,
            r#"expected a comparison operator after path "attributes[\"k\"]""#,
        ),
        (
            r#"attributes["k"] "v""#,
            Span,
            17,
            r#"expected a comparison operator after path "attributes[\"k\"]""#,
        ),
        (
            r#""v""#,
            Span,
            4,
            r#"expected a comparison operator after value "\"v\"""#,
        ),
        ("name ==", Span, 8, "expected a value, got end of condition"),
        ("name == ==", Span, 9, r#"expected a value, got "==""#),
        (
            r#"nme == "x""#,
            Span,
            1,
            r#"unknown path "nme" in the span context"#,
        ),
        (
            r#"severity_text == "x""#,
            Span,
            1,
            r#"unknown path "severity_text" in the span context"#,
        ),
        (
            r#"span.name == "x""#,
            Log,
            1,
            r#"unknown path "span.name" in the log context"#,
        ),
        (
            r#"time_unix_nano == 1"#,
            Span,
            1,
            r#"unknown path "time_unix_nano" in the span context"#,
        ),
        (
            r#"name == 1 and kind == 2 or status.cod == 1"#,
            Span,
            28,
            r#"unknown path "status.cod" in the span context"#,
        ),
        (
            r#"trace_id.hex == "x""#,
            Span,
            1,
            r#"unknown path "trace_id.hex" in the span context"#,
        ),
        (
            r#"name["x"] == "x""#,
            Span,
            1,
            r#"path "name[\"x\"]" cannot be indexed"#,
        ),
        (r#"name == "x"#, Span, 9, "unterminated string"),
        (
            r#"name == "\q""#,
            Span,
            10,
            r#"invalid escape sequence "\q" in string (use "\\" for a backslash)"#,
        ),
        ("name == #", Span, 9, "unexpected character '#'"),
        (
            "kind == SPAN_KIND_SERVR",
            Span,
            9,
            r#"unknown enum symbol "SPAN_KIND_SERVR" in the span context"#,
        ),
        (
            "severity_number == SPAN_KIND_SERVER",
            Log,
            20,
            r#"unknown enum symbol "SPAN_KIND_SERVER" in the log context"#,
        ),
        (
            "kind == SEVERITY_NUMBER_INFO",
            Span,
            9,
            r#"unknown enum symbol "SEVERITY_NUMBER_INFO" in the span context"#,
        ),
        (
            r#"Foo(name) == true"#,
            Span,
            1,
            r#"unsupported function "Foo""#,
        ),
        (
            r#"not Sort(name) == "G""#,
            Span,
            5,
            r#"unsupported function "Sort""#,
        ),
        (
            r#"isMatch(name, "x")"#,
            Span,
            1,
            r#"converter names must start with an uppercase letter but got "isMatch""#,
        ),
        (
            r#"set(name, "x")"#,
            Span,
            1,
            r#"converter names must start with an uppercase letter but got "set""#,
        ),
        (
            r#"IsMatch(name, "(")"#,
            Span,
            15,
            r#"invalid regex "(" in IsMatch: unclosed group"#,
        ),
        (
            r#"IsMatch(name, attributes["p"])"#,
            Span,
            15,
            "the pattern of IsMatch must be a string literal",
        ),
        (
            r#"IsMatch(name)"#,
            Span,
            1,
            "IsMatch expects 2 arguments, got 1",
        ),
        (
            r#"IsString(name, name)"#,
            Span,
            1,
            "IsString expects 1 argument, got 2",
        ),
        (
            r#"IsMatch(target = name, pattern = "x")"#,
            Span,
            9,
            "named arguments are not supported",
        ),
        (
            r#"IsMatch(name "x")"#,
            Span,
            14,
            r#"expected "," or ")", got "\"x\"""#,
        ),
        ("(true", Span, 6, r#"expected ")", got end of condition"#),
        (
            "true)",
            Span,
            5,
            r#"unexpected ")" after the end of the condition"#,
        ),
        (
            "true and",
            Span,
            9,
            "expected a condition, got end of condition",
        ),
        (
            "not not true",
            Span,
            5,
            r#"expected a condition after "not", got "not""#,
        ),
        ("true or or", Span, 9, r#"expected a value, got "or""#),
        (
            "name == 99999999999999999999",
            Span,
            9,
            r#"integer literal "99999999999999999999" is out of range"#,
        ),
        ("name == 0x1", Span, 9, r#"invalid byte literal "0x1""#),
        (
            r#"attributes[name] == 1"#,
            Span,
            12,
            r#"expected a string or integer key, got "name""#,
        ),
        (
            r#"attributes["a" == 1"#,
            Span,
            16,
            r#"expected "]", got "==""#,
        ),
        (
            r#"name == ["a"]"#,
            Span,
            9,
            "list and map literals are not supported in conditions",
        ),
        (
            "name.",
            Span,
            6,
            r#"expected a path segment after ".", got end of condition"#,
        ),
        (
            r#"attributes["a"].b == 1"#,
            Span,
            16,
            "only the last segment of a path may be indexed",
        ),
        // Columns count characters, not bytes.
        (
            r#""é" == nme"#,
            Span,
            8,
            r#"unknown path "nme" in the span context"#,
        ),
    ];
    for (expr, ctx, col, msg) in cases {
        let e = err(expr, *ctx);
        assert_eq!(
            (e.column, e.message.as_str()),
            (*col, *msg),
            "{ctx:?}: {expr}"
        );
        assert_eq!(e.expression, *expr);
    }
}

#[test]
fn error_display() {
    let e = err(r#"attributes["k"] "v""#, ContextKind::Span);
    assert_eq!(
        e.to_string(),
        r#"invalid OTTL condition "attributes[\"k\"] \"v\"": column 17: expected a comparison operator after path "attributes[\"k\"]""#
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("invalid OTTL condition"));
}

/// The two `ottl_condition` lists of conformance/otelcol/tail_sampling_config.yaml.
#[test]
fn tail_sampling_conformance_conditions() {
    let span_conds: Vec<String> = vec![
        r#"attributes["test_attr_key_1"] == "test_attr_val_1""#.into(),
        r#"attributes["test_attr_key_2"] != "test_attr_val_1""#.into(),
    ];
    let event_conds: Vec<String> = vec![
        r#"name != "test_span_event_name""#.into(),
        r#"attributes["test_event_attr_key_2"] != "test_event_attr_val_1""#.into(),
    ];
    let spans = ConditionSet::parse_all(&span_conds, ContextKind::Span);
    let events = ConditionSet::parse_all(&event_conds, ContextKind::SpanEvent);
    let (Ok(spans), Ok(events)) = (spans, events) else {
        panic!("conformance conditions must parse");
    };
    assert_eq!((spans.len(), events.len()), (2, 2));

    // A span without test_attr_key_2 matches the second condition: missing != "x" is true.
    let plain = Span::default();
    assert!(spans.eval_span(None, None, &plain));
    // Both false: key_1 differs, key_2 equals the compared value.
    let neither = Span {
        attributes: vec![
            kv("test_attr_key_1", s("other")),
            kv("test_attr_key_2", s("test_attr_val_1")),
        ],
        ..Default::default()
    };
    assert!(!spans.eval_span(None, None, &neither));
    let first = Span {
        attributes: vec![
            kv("test_attr_key_1", s("test_attr_val_1")),
            kv("test_attr_key_2", s("test_attr_val_1")),
        ],
        ..Default::default()
    };
    assert!(spans.eval_span(None, None, &first));

    let named = span::Event {
        name: "test_span_event_name".into(),
        attributes: vec![kv("test_event_attr_key_2", s("test_event_attr_val_1"))],
        ..Default::default()
    };
    assert!(!events.eval_span_event(None, None, &neither, &named));
    let other = span::Event {
        name: "other".into(),
        ..named.clone()
    };
    assert!(events.eval_span_event(None, None, &neither, &other));
}

#[test]
fn condition_set_is_or_and_empty_matches_nothing() {
    let empty = ConditionSet::parse_all(&[], ContextKind::Span);
    assert!(empty.is_ok_and(|s| s.is_empty() && !s.eval_span(None, None, &span())));
    let set = ConditionSet::parse_all(
        &["false".to_string(), r#"name == "GET /cart""#.to_string()],
        ContextKind::Span,
    );
    assert!(set.is_ok_and(|s| s.eval_span(None, None, &span())));
    let bad = ConditionSet::parse_all(
        &["true".to_string(), "nme == 1".to_string()],
        ContextKind::Span,
    );
    assert_eq!(
        bad.map(|_| ()).map_err(|e| e.expression),
        Err("nme == 1".to_string())
    );
}

#[test]
fn conditions_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Condition>();
    assert_send_sync::<ConditionSet>();
    assert_send_sync::<ParseError>();
}

#[test]
fn wrong_context_data_reads_as_nil() {
    // A span condition handed a log record sees nil, never panics.
    let c = Condition::parse(
        r#"name == nil and attributes["k"] == nil"#,
        ContextKind::Span,
    );
    assert!(c.is_ok_and(|c| c.eval_log(None, None, &log())));
}

#[test]
fn request_headers_in_the_resource_context() {
    let c =
        Condition::parse(r#"request["X-Team"] == "blue""#, ContextKind::Resource).expect("parses");
    let h = vec![("x-team".to_string(), "blue".to_string())];
    assert!(c.eval_resource_request(None, Some(&h)));
    assert!(!c.eval_resource_request(None, None));
    assert!(!c.eval_resource(None));
    assert!(Condition::parse(r#"request["X-Team"] == "blue""#, ContextKind::Span).is_err());
}

/// A hostile nesting is refused with its column, not a stack overflow; 64 levels still parse.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = |n: usize| format!("{}name == \"x\"{}", "(".repeat(n), ")".repeat(n));
    assert!(Condition::parse(&deep(64), ContextKind::Span).is_ok());
    let e = err(&deep(100_000), ContextKind::Span);
    assert_eq!(e.column, 65);
    assert_eq!(
        e.message,
        "the condition nests parentheses and calls more than 64 deep"
    );
    let calls = format!(
        "{}\"x\"{}",
        "IsString(".repeat(100_000),
        ")".repeat(100_000)
    );
    let e = err(&calls, ContextKind::Span);
    assert_eq!(e.column, 64 * 9 + 1);
    // Sequences are not nesting: a long flat condition parses.
    let flat = vec!["name == \"x\""; 10_000].join(" or ");
    assert!(Condition::parse(&flat, ContextKind::Span).is_ok());
}

/// Converters that make values, in conditions (upstream allows any converter as an operand).
#[test]
fn value_converters_in_conditions() {
    check(
        ContextKind::Span,
        &[
            (r#"Len(name) == 9"#, true),
            (r#"Len(name) == 10"#, false),
            (r#"Len(attributes["http.method"]) > 100"#, false),
            (r#"Int("42") == 42"#, true),
            (r#"Int("4x") == nil"#, true),
            (r#"String(attributes["http.status_code"]) == "503""#, true),
            (r#"ConvertCase(name, "upper") == "GET /CART""#, true),
            (
                r#"SHA256("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881""#,
                true,
            ),
            (r#"IsString(Concat([name, "x"], "-"))"#, true),
            (r#"IsMatch(Substring(name, 0, 3), "^GET$")"#, true),
        ],
    );
}

#[test]
fn ids_as_bytes_compare_with_trace_id_and_span_id() {
    check(
        ContextKind::Span,
        &[
            (
                "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)",
                true,
            ),
            (
                "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f11)",
                false,
            ),
            ("span_id == SpanID(0xabababababababab)", true),
            ("parent_span_id == SpanID(0xabababababababab)", false),
        ],
    );
}

/// Every value converter the parser knows is parsed by a branch of `arg` (a name it listed but
/// no branch took would recurse until the stack overflowed: found with `FNV`, lexed as an enum).
#[test]
fn every_value_converter_parses_without_recursing() {
    for name in super::parser::VALUE_CONVERTERS {
        for args in [
            "",
            "name",
            "name, \"x\"",
            "name, \"x\", \"y\"",
            "[name]",
            "\"%s\", [name]",
        ] {
            let st = format!("set(attributes[\"x\"], {name}({args}))");
            let _ = super::Statement::parse(&st, ContextKind::Span);
            let cond = format!("{name}({args}) == \"x\"");
            let _ = Condition::parse(&cond, ContextKind::Span);
        }
    }
}
