//! Every source column type round-trips MariaDB → SQLite as docs/type-mapping.md promises:
//! the exact stored value and its storage class (`typeof`), through INSERT, UPDATE (values
//! change; a key change moves the row) and DELETE, against a real MariaDB server and the real
//! `sluice` binary. Where the source's own rendering is comparable, the target is also checked
//! against it.

mod common;

use common::{Env, Sluice};

const TABLES: &str = "[[tables]]\nmatch = \"t.*\"\n";

/// Starts a source with database `t` and `setup` run, and sluice replicating all of `t`.
fn start(setup: &str) -> (Env, Sluice) {
    let env = Env::new(&format!("CREATE DATABASE t;\n{setup}"), TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    (env, sluice)
}

/// Runs `sql` on the source in one session with a non-strict `sql_mode` (zero dates, invalid
/// ENUM values), then waits until the target has it.
fn apply(env: &Env, sluice: &mut Sluice, sql: &str) {
    env.db.exec(&format!("SET SESSION sql_mode = '';\n{sql}"));
    env.wait_caught_up(sluice);
}

fn quoted(cols: &[&str]) -> String {
    cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

/// The target rows of `table` ordered by `id`, each cell as `typeof:value` (values rendered
/// as [`Env::target_rows`] does: blobs as uppercase hex).
fn typed_rows(env: &Env, table: &str, cols: &[&str]) -> Vec<Vec<String>> {
    let select: Vec<String> = cols.iter().map(|c| format!("typeof(\"{c}\"), \"{c}\"")).collect();
    env.target_rows(&format!("SELECT {} FROM \"{table}\" ORDER BY id", select.join(", ")))
        .into_iter()
        .map(|r| r.chunks(2).map(|p| format!("{}:{}", p[0], p[1])).collect())
        .collect()
}

/// The target's values of `cols` ordered by `id`.
fn target_values(env: &Env, table: &str, cols: &[&str]) -> Vec<Vec<String>> {
    env.target_rows(&format!("SELECT {} FROM \"{table}\" ORDER BY id", quoted(cols)))
}

/// The source's rendering of `exprs` over `t.table` ordered by `id`.
fn source_values(env: &Env, table: &str, exprs: &[&str]) -> Vec<Vec<String>> {
    let sql = format!("SELECT {} FROM t.{table} ORDER BY id", exprs.join(", "));
    env.db.query_rows(&sql)
}

/// The target's bytes of each of `cols` as uppercase hex (`NULL` for NULL), ordered by `id`.
/// For text columns these are the UTF-8 bytes.
fn target_hex(env: &Env, table: &str, cols: &[&str]) -> Vec<Vec<String>> {
    let select: Vec<String> = cols
        .iter()
        .map(|c| format!("CASE WHEN \"{c}\" IS NULL THEN 'NULL' ELSE hex(\"{c}\") END"))
        .collect();
    env.target_rows(&format!(
        "SELECT id, {} FROM \"{table}\" ORDER BY id",
        select.join(", ")
    ))
}

/// The source's bytes of each of `cols` as uppercase hex (`NULL` for NULL), ordered by `id`;
/// with `as_utf8`, character columns are first converted to utf8mb4.
fn source_hex(env: &Env, table: &str, cols: &[&str], as_utf8: bool) -> Vec<Vec<String>> {
    let exprs: Vec<String> = std::iter::once("id".to_string())
        .chain(cols.iter().map(|c| {
            if as_utf8 {
                format!("HEX(CONVERT(`{c}` USING utf8mb4))")
            } else {
                format!("HEX(`{c}`)")
            }
        }))
        .collect();
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    source_values(env, table, &exprs)
}

fn int(v: impl std::fmt::Display) -> String {
    format!("integer:{v}")
}

fn text(v: impl std::fmt::Display) -> String {
    format!("text:{v}")
}

fn real(v: f64) -> String {
    format!("real:{v}")
}

fn blob(hex: &str) -> String {
    format!("blob:{hex}")
}

fn null() -> String {
    "null:NULL".to_string()
}

fn nulls(n: usize) -> Vec<String> {
    vec![null(); n]
}

fn row(id: i64, rest: Vec<String>) -> Vec<String> {
    std::iter::once(int(id)).chain(rest).collect()
}

fn texts(values: &[&str]) -> Vec<String> {
    values.iter().map(text).collect()
}

/// Rewrites MariaDB's rendering of a temporal value with a fraction the way the mapping
/// promises: the fraction only when non-zero, and then always 6 digits.
fn sluice_fraction(s: &str) -> String {
    match s.split_once('.') {
        Some((head, frac)) if frac.bytes().all(|b| b == b'0') => head.to_string(),
        Some((head, frac)) => format!("{head}.{frac:0<6}"),
        None => s.to_string(),
    }
}

fn all_sluice_fractions(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|r| r.iter().map(|v| sluice_fraction(v)).collect())
        .collect()
}

/// `pragma_table_info` of a target table: `(name, declared type, notnull)`.
fn declared_columns(env: &Env, table: &str) -> Vec<(String, String, bool)> {
    env.target_rows(&format!(
        "SELECT name, type, \"notnull\" FROM pragma_table_info('{table}') ORDER BY cid"
    ))
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2] == "1"))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Integers

const INT_COLS: [&str; 11] = ["id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu"];

#[test]
fn integers_store_exact_values_as_integer_and_bigint_unsigned_above_i64_max_as_text() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.ints (id INT PRIMARY KEY, ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT,
         siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT,
         biu BIGINT UNSIGNED);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.ints VALUES
         (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0),
         (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,
             18446744073709551615),
         (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
         (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         (5, -1, 128, -1, 32768, -1, 8388608, -1, 2147483648, -1, 9223372036854775808);",
    );
    assert_eq!(
        typed_rows(&env, "ints", &INT_COLS),
        vec![
            row(
                1,
                vec![
                    int(-128),
                    int(0),
                    int(-32768),
                    int(0),
                    int(-8388608),
                    int(0),
                    int(-2147483648_i64),
                    int(0),
                    int(i64::MIN),
                    int(0),
                ]
            ),
            row(
                2,
                vec![
                    int(127),
                    int(255),
                    int(32767),
                    int(65535),
                    int(8388607),
                    int(16777215),
                    int(2147483647),
                    int(4294967295_u32),
                    int(i64::MAX),
                    text(u64::MAX),
                ]
            ),
            row(3, vec![int(0); 10]),
            row(4, nulls(10)),
            row(
                5,
                vec![
                    int(-1),
                    int(128),
                    int(-1),
                    int(32768),
                    int(-1),
                    int(8388608),
                    int(-1),
                    int(2147483648_u32),
                    int(-1),
                    text("9223372036854775808"),
                ]
            ),
        ]
    );
    assert_eq!(
        target_values(&env, "ints", &INT_COLS),
        source_values(&env, "ints", &INT_COLS)
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.ints SET ti = 126, tiu = 254, si = 32766, siu = 65534, mi = 8388606, miu = 16777214,
             i = 2147483646, iu = 4294967294, bi = 9223372036854775806, biu = 18446744073709551614 WHERE id = 2;
         UPDATE t.ints SET id = 50, biu = 9223372036854775807 WHERE id = 5;
         UPDATE t.ints SET ti = 7 WHERE id = 4;
         UPDATE t.ints SET bi = NULL, biu = 1 WHERE id = 1;
         DELETE FROM t.ints WHERE id = 3;",
    );
    assert_eq!(
        typed_rows(&env, "ints", &INT_COLS),
        vec![
            row(
                1,
                vec![
                    int(-128),
                    int(0),
                    int(-32768),
                    int(0),
                    int(-8388608),
                    int(0),
                    int(-2147483648_i64),
                    int(0),
                    null(),
                    int(1),
                ]
            ),
            row(
                2,
                vec![
                    int(126),
                    int(254),
                    int(32766),
                    int(65534),
                    int(8388606),
                    int(16777214),
                    int(2147483646),
                    int(4294967294_u32),
                    int(9223372036854775806_i64),
                    text("18446744073709551614"),
                ]
            ),
            row(4, std::iter::once(int(7)).chain(nulls(9)).collect()),
            row(
                50,
                vec![
                    int(-1),
                    int(128),
                    int(-1),
                    int(32768),
                    int(-1),
                    int(8388608),
                    int(-1),
                    int(2147483648_u32),
                    int(-1),
                    int(i64::MAX),
                ]
            ),
        ]
    );
    assert_eq!(
        target_values(&env, "ints", &INT_COLS),
        source_values(&env, "ints", &INT_COLS)
    );
    assert!(sluice.stop().success());
}

#[test]
fn bigint_unsigned_key_above_i64_max_is_stored_as_text_and_updates_and_deletes_by_it() {
    let (env, mut sluice) = start("CREATE TABLE t.ubig (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(10));");
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.ubig VALUES (0, 'zero'), (9223372036854775807, 'i64max'), (9223372036854775808, 'above'),
             (18446744073709551615, 'max');",
    );
    // Integers sort before text; the text forms sort as strings (as the mapping doc says).
    assert_eq!(
        typed_rows(&env, "ubig", &["id", "v"]),
        vec![
            vec![int(0), text("zero")],
            vec![int(i64::MAX), text("i64max")],
            vec![text(u64::MAX), text("max")],
            vec![text("9223372036854775808"), text("above")],
        ]
    );
    assert_eq!(
        env.target_rows("SELECT v FROM ubig WHERE id = '18446744073709551615'"),
        vec![vec!["max"]]
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.ubig SET v = 'MAX' WHERE id = 18446744073709551615;
         UPDATE t.ubig SET id = 5 WHERE id = 9223372036854775808;
         UPDATE t.ubig SET id = 18446744073709551614 WHERE id = 0;
         DELETE FROM t.ubig WHERE id = 9223372036854775807;",
    );
    assert_eq!(
        typed_rows(&env, "ubig", &["id", "v"]),
        vec![
            vec![int(5), text("above")],
            vec![text("18446744073709551614"), text("zero")],
            vec![text(u64::MAX), text("MAX")],
        ]
    );
    assert!(sluice.stop().success());
}

const YEAR_THEN_INTS: &str = "CREATE TABLE t.year_ints (id INT PRIMARY KEY, y YEAR, i INT, iu INT UNSIGNED,
    ti TINYINT, f FLOAT);";

const YEAR_THEN_INTS_ROWS: &str = "INSERT INTO t.year_ints VALUES (1, 2024, -1, 4294967295, -128, -0.5),
    (2, 1999, 2147483647, 1, 127, 1.5);";

fn check_year_then_ints(env: &Env) {
    assert_eq!(
        typed_rows(env, "year_ints", &["id", "y", "i", "iu", "ti", "f"]),
        vec![
            row(1, vec![int(2024), int(-1), int(4294967295_u32), int(-128), real(-0.5)]),
            row(2, vec![int(1999), int(2147483647), int(1), int(127), real(1.5)]),
        ]
    );
}

// MariaDB's TABLE_MAP signedness bitmap has a bit for YEAR columns too (YEAR is an unsigned
// TINYINT inside the server); the numeric columns after a YEAR must keep their own signedness.
#[test]
fn integers_after_a_year_column_keep_their_signedness_for_tables_present_at_startup() {
    let (env, mut sluice) = start(YEAR_THEN_INTS);
    apply(&env, &mut sluice, YEAR_THEN_INTS_ROWS);
    check_year_then_ints(&env);
    assert!(sluice.stop().success());
}

#[test]
fn integers_after_a_year_column_keep_their_signedness_for_tables_created_while_running() {
    let (env, mut sluice) = start("");
    apply(&env, &mut sluice, &format!("{YEAR_THEN_INTS}\n{YEAR_THEN_INTS_ROWS}"));
    check_year_then_ints(&env);
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// DECIMAL

#[test]
fn decimals_are_exact_text_with_all_scale_digits() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.decs (id INT PRIMARY KEY, d10 DECIMAL(10,2), d65 DECIMAL(65,30), d65i DECIMAL(65,0),
         d5 DECIMAL(5,5));",
    );
    let n35 = "9".repeat(35);
    let f30 = "9".repeat(30);
    let n65 = "9".repeat(65);
    apply(
        &env,
        &mut sluice,
        &format!(
            "INSERT INTO t.decs VALUES
             (1, 12345678.99, {n35}.{f30}, {n65}, 0.99999),
             (2, -12345678.99, -{n35}.{f30}, -{n65}, -0.99999),
             (3, 0, 0, 0, 0),
             (4, 0.01, 0.000000000000000000000000000001, 1, 0.00001),
             (5, -0.5, -1.5, -1000000000, -0.00001),
             (6, 1.5, 1000000000.000000001, 123456789012345678901234567890, 0.1),
             (7, NULL, NULL, NULL, NULL);"
        ),
    );
    let cols = ["id", "d10", "d65", "d65i", "d5"];
    let zeros30 = "0".repeat(30);
    assert_eq!(
        typed_rows(&env, "decs", &cols),
        vec![
            row(1, texts(&["12345678.99", &format!("{n35}.{f30}"), &n65, "0.99999"])),
            row(
                2,
                texts(&["-12345678.99", &format!("-{n35}.{f30}"), &format!("-{n65}"), "-0.99999"])
            ),
            row(3, texts(&["0.00", &format!("0.{zeros30}"), "0", "0.00000"])),
            row(4, texts(&["0.01", &format!("0.{}1", "0".repeat(29)), "1", "0.00001"])),
            row(
                5,
                texts(&["-0.50", &format!("-1.5{}", "0".repeat(29)), "-1000000000", "-0.00001"])
            ),
            row(
                6,
                texts(&[
                    "1.50",
                    &format!("1000000000.000000001{}", "0".repeat(21)),
                    "123456789012345678901234567890",
                    "0.10000"
                ])
            ),
            row(7, nulls(4)),
        ]
    );
    assert_eq!(target_values(&env, "decs", &cols), source_values(&env, "decs", &cols));

    apply(
        &env,
        &mut sluice,
        "UPDATE t.decs SET d10 = d10 - 0.01 WHERE id = 1;
         UPDATE t.decs SET id = 60, d65 = 0.5 WHERE id = 6;
         UPDATE t.decs SET d5 = 0.5 WHERE id = 7;
         DELETE FROM t.decs WHERE id = 3;",
    );
    let rows = typed_rows(&env, "decs", &cols);
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![int(1), int(2), int(4), int(5), int(7), int(60)]
    );
    assert_eq!(rows[0][1], text("12345678.98"));
    assert_eq!(rows[4], row(7, vec![null(), null(), null(), text("0.50000")]));
    assert_eq!(
        rows[5],
        row(
            60,
            texts(&[
                "1.50",
                &format!("0.5{}", "0".repeat(29)),
                "123456789012345678901234567890",
                "0.10000"
            ])
        )
    );
    assert_eq!(target_values(&env, "decs", &cols), source_values(&env, "decs", &cols));
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// FLOAT and DOUBLE

#[test]
fn float_and_double_are_real_and_float_is_stored_as_its_shortest_decimal() {
    let (env, mut sluice) = start("CREATE TABLE t.floats (id INT PRIMARY KEY, f FLOAT, d DOUBLE);");
    // Row 6's FLOAT is the f32 -7.038531e-26, written as its exact value so the server's
    // double→float conversion is exact: the double-rounding corner case of the mapping doc.
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.floats VALUES
         (1, 0.1, 0.1),
         (2, -1.5, -1.5e300),
         (3, 3.4028235e38, 1.7976931348623157e308),
         (4, 1.17549435e-38, 2.2250738585072014e-308),
         (5, 0, 0),
         (6, -7.038530691851209e-26, 5e-324),
         (7, 16777217, 123456789.123456789),
         (8, NULL, NULL);",
    );
    let corner: f32 = -7.038531e-26;
    assert_eq!(
        typed_rows(&env, "floats", &["id", "f", "d"]),
        vec![
            row(1, vec![real(0.1), real(0.1)]),
            row(2, vec![real(-1.5), real(-1.5e300)]),
            row(3, vec![real(3.4028235e38), real(f64::MAX)]),
            row(4, vec![real(1.1754944e-38), real(2.2250738585072014e-308)]),
            row(5, vec![real(0.0), real(0.0)]),
            row(6, vec![real(f64::from(corner)), real(5e-324)]),
            row(7, vec![real(16777216.0), real(123456789.12345679)]),
            row(8, nulls(2)),
        ]
    );
    // The stored REAL converts back to the source's f32 bit for bit.
    let stored: f64 = env.target_rows("SELECT f FROM floats WHERE id = 6")[0][0]
        .parse()
        .unwrap();
    assert_eq!((stored as f32).to_bits(), corner.to_bits());
    // DOUBLE is exact: equal to the source's own value.
    let target_d = target_values(&env, "floats", &["d"]);
    let source_d = source_values(&env, "floats", &["d"]);
    assert_eq!(target_d.len(), source_d.len());
    for (t, s) in target_d.iter().zip(&source_d) {
        assert_eq!(
            t[0].parse::<f64>().ok(),
            s[0].parse::<f64>().ok(),
            "DOUBLE {t:?} vs source {s:?}"
        );
    }

    apply(
        &env,
        &mut sluice,
        "UPDATE t.floats SET f = 0.2, d = -0.1 WHERE id = 1;
         UPDATE t.floats SET id = 20 WHERE id = 2;
         UPDATE t.floats SET f = 2.5 WHERE id = 8;
         DELETE FROM t.floats WHERE id = 5;",
    );
    assert_eq!(
        typed_rows(&env, "floats", &["id", "f", "d"]),
        vec![
            row(1, vec![real(0.2), real(-0.1)]),
            row(3, vec![real(3.4028235e38), real(f64::MAX)]),
            row(4, vec![real(1.1754944e-38), real(2.2250738585072014e-308)]),
            row(6, vec![real(f64::from(corner)), real(5e-324)]),
            row(7, vec![real(16777216.0), real(123456789.12345679)]),
            row(8, vec![real(2.5), null()]),
            row(20, vec![real(-1.5), real(-1.5e300)]),
        ]
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// DATE, TIME, DATETIME, YEAR

const TEMPORAL_COLS: [&str; 10] = ["id", "d", "t", "t2", "t3", "t6", "dt", "dt3", "dt6", "y"];

#[test]
fn date_time_datetime_and_year_keep_zero_partial_negative_and_fractional_values() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.temporal (id INT PRIMARY KEY, d DATE, t TIME, t2 TIME(2), t3 TIME(3), t6 TIME(6),
         dt DATETIME, dt3 DATETIME(3), dt6 DATETIME(6), y YEAR);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.temporal VALUES
         (1, '2024-02-29', '12:34:56', '01:02:03.45', '12:34:56.789', '12:34:56.000001', '2024-02-29 23:59:59',
             '2024-02-29 23:59:59.123', '2024-02-29 23:59:59.999999', 2024),
         (2, '0000-00-00', '-838:59:59', '-00:00:00.99', '-00:00:01.5', '-00:00:00.000001', '0000-00-00 00:00:00',
             '0000-00-00 00:00:00', '0000-00-00 00:00:00', 0),
         (3, '2024-00-15', '838:59:59', '838:59:59.99', '838:59:59.999', '838:59:59.999999', '1000-01-01 00:00:00',
             '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999', 1901),
         (4, '9999-12-31', '00:00:00', '-838:59:59.99', '-12:00:00.05', '-838:59:59.999999', '2024-00-00 00:00:00',
             '2000-01-01 00:00:00.001', '1970-01-01 00:00:00.5', 2155),
         (5, '1000-01-01', '-00:00:01', '-00:00:01.01', '00:00:00.001', '-01:02:03.040506', '2038-01-19 03:14:08',
             '2024-06-30 12:00:00.000', '2024-06-30 12:00:00.000000', 1970),
         (6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let expected = |id: i64, v: [&str; 8], y: i64| -> Vec<String> {
        let mut r = row(id, texts(&v));
        r.push(int(y));
        r
    };
    assert_eq!(
        typed_rows(&env, "temporal", &TEMPORAL_COLS),
        vec![
            expected(
                1,
                [
                    "2024-02-29",
                    "12:34:56",
                    "01:02:03.450000",
                    "12:34:56.789000",
                    "12:34:56.000001",
                    "2024-02-29 23:59:59",
                    "2024-02-29 23:59:59.123000",
                    "2024-02-29 23:59:59.999999",
                ],
                2024
            ),
            expected(
                2,
                [
                    "0000-00-00",
                    "-838:59:59",
                    "-00:00:00.990000",
                    "-00:00:01.500000",
                    "-00:00:00.000001",
                    "0000-00-00 00:00:00",
                    "0000-00-00 00:00:00",
                    "0000-00-00 00:00:00",
                ],
                0
            ),
            expected(
                3,
                [
                    "2024-00-15",
                    "838:59:59",
                    "838:59:59.990000",
                    "838:59:59.999000",
                    "838:59:59.999999",
                    "1000-01-01 00:00:00",
                    "9999-12-31 23:59:59.999000",
                    "9999-12-31 23:59:59.999999",
                ],
                1901
            ),
            expected(
                4,
                [
                    "9999-12-31",
                    "00:00:00",
                    "-838:59:59.990000",
                    "-12:00:00.050000",
                    "-838:59:59.999999",
                    "2024-00-00 00:00:00",
                    "2000-01-01 00:00:00.001000",
                    "1970-01-01 00:00:00.500000",
                ],
                2155
            ),
            expected(
                5,
                [
                    "1000-01-01",
                    "-00:00:01",
                    "-00:00:01.010000",
                    "00:00:00.001000",
                    "-01:02:03.040506",
                    "2038-01-19 03:14:08",
                    "2024-06-30 12:00:00",
                    "2024-06-30 12:00:00",
                ],
                1970
            ),
            row(6, nulls(9)),
        ]
    );
    // The source's own text, with the fraction normalised as the mapping doc describes.
    let source_cols = ["id", "d", "t", "t2", "t3", "t6", "dt", "dt3", "dt6", "y + 0"];
    assert_eq!(
        target_values(&env, "temporal", &TEMPORAL_COLS),
        all_sluice_fractions(source_values(&env, "temporal", &source_cols))
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.temporal SET d = '2025-01-01', t = '-01:00:00', dt6 = NULL WHERE id = 1;
         UPDATE t.temporal SET id = 20 WHERE id = 2;
         UPDATE t.temporal SET y = 1999, t6 = '00:00:00.5' WHERE id = 6;
         DELETE FROM t.temporal WHERE id = 5;",
    );
    let rows = typed_rows(&env, "temporal", &TEMPORAL_COLS);
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![int(1), int(3), int(4), int(6), int(20)]
    );
    assert_eq!(
        rows[0],
        vec![
            int(1),
            text("2025-01-01"),
            text("-01:00:00"),
            text("01:02:03.450000"),
            text("12:34:56.789000"),
            text("12:34:56.000001"),
            text("2024-02-29 23:59:59"),
            text("2024-02-29 23:59:59.123000"),
            null(),
            int(2024),
        ]
    );
    assert_eq!(
        rows[3],
        vec![
            int(6),
            null(),
            null(),
            null(),
            null(),
            text("00:00:00.500000"),
            null(),
            null(),
            null(),
            int(1999)
        ]
    );
    assert_eq!(rows[4][1], text("0000-00-00"));
    assert_eq!(rows[4][9], int(0));
    assert_eq!(
        target_values(&env, "temporal", &TEMPORAL_COLS),
        all_sluice_fractions(source_values(&env, "temporal", &source_cols))
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// TIMESTAMP

const TS_COLS: [&str; 8] = ["id", "ts0", "ts1", "ts2", "ts3", "ts4", "ts5", "ts6"];

#[test]
fn timestamps_of_every_precision_are_stored_in_utc_whatever_the_session_time_zone() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.stamps (id INT PRIMARY KEY, ts0 TIMESTAMP(0) NULL, ts1 TIMESTAMP(1) NULL,
         ts2 TIMESTAMP(2) NULL, ts3 TIMESTAMP(3) NULL, ts4 TIMESTAMP(4) NULL, ts5 TIMESTAMP(5) NULL,
         ts6 TIMESTAMP(6) NULL);",
    );
    apply(
        &env,
        &mut sluice,
        "SET time_zone = '+05:30';
         INSERT INTO t.stamps VALUES
         (1, '2024-01-01 05:30:00', '2024-01-01 05:30:00.1', '2024-01-01 05:30:00.12', '2024-01-01 05:30:00.123',
             '2024-01-01 05:30:00.1234', '2024-01-01 05:30:00.12345', '2024-01-01 05:30:00.123456'),
         (2, '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
             '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00'),
         (3, '1970-01-01 05:30:01', '1970-01-01 05:30:01', '1970-01-01 05:30:01', '1970-01-01 05:30:01',
             '1970-01-01 05:30:01', '1970-01-01 05:30:01', '1970-01-01 05:30:01'),
         (4, '2038-01-19 08:44:07', '2038-01-19 08:44:07.9', '2038-01-19 08:44:07.99', '2038-01-19 08:44:07.999',
             '2038-01-19 08:44:07.9999', '2038-01-19 08:44:07.99999', '2038-01-19 08:44:07.999999'),
         (6, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         (7, '2024-03-01 02:00:00', NULL, NULL, NULL, NULL, NULL, '2024-03-01 02:00:00.000001');
         SET time_zone = '-08:00';
         INSERT INTO t.stamps VALUES
         (5, '2023-12-31 16:00:00', '2023-12-31 16:00:00.5', '2023-12-31 16:00:00.5', '2023-12-31 16:00:00.5',
             '2023-12-31 16:00:00.5', '2023-12-31 16:00:00.5', '2023-12-31 16:00:00.5');",
    );
    let all = |id: i64, first: &str, rest: &str| -> Vec<String> {
        std::iter::once(int(id))
            .chain(std::iter::once(text(first)))
            .chain((0..6).map(|_| text(rest)))
            .collect()
    };
    assert_eq!(
        typed_rows(&env, "stamps", &TS_COLS),
        vec![
            row(
                1,
                texts(&[
                    "2024-01-01 00:00:00",
                    "2024-01-01 00:00:00.100000",
                    "2024-01-01 00:00:00.120000",
                    "2024-01-01 00:00:00.123000",
                    "2024-01-01 00:00:00.123400",
                    "2024-01-01 00:00:00.123450",
                    "2024-01-01 00:00:00.123456",
                ])
            ),
            all(2, "0000-00-00 00:00:00", "0000-00-00 00:00:00"),
            all(3, "1970-01-01 00:00:01", "1970-01-01 00:00:01"),
            row(
                4,
                texts(&[
                    "2038-01-19 03:14:07",
                    "2038-01-19 03:14:07.900000",
                    "2038-01-19 03:14:07.990000",
                    "2038-01-19 03:14:07.999000",
                    "2038-01-19 03:14:07.999900",
                    "2038-01-19 03:14:07.999990",
                    "2038-01-19 03:14:07.999999",
                ])
            ),
            all(5, "2024-01-01 00:00:00", "2024-01-01 00:00:00.500000"),
            row(6, nulls(7)),
            row(
                7,
                vec![
                    text("2024-02-29 20:30:00"),
                    null(),
                    null(),
                    null(),
                    null(),
                    null(),
                    text("2024-02-29 20:30:00.000001"),
                ]
            ),
        ]
    );
    let source_utc = |env: &Env| {
        let sql = format!(
            "SET time_zone = '+00:00'; SELECT {} FROM t.stamps ORDER BY id",
            TS_COLS.join(", ")
        );
        all_sluice_fractions(env.db.query_rows(&sql))
    };
    assert_eq!(target_values(&env, "stamps", &TS_COLS), source_utc(&env));

    apply(
        &env,
        &mut sluice,
        "SET time_zone = '+05:30';
         UPDATE t.stamps SET ts0 = '2024-06-01 12:00:00', ts6 = '2024-06-01 12:00:00.654321' WHERE id = 1;
         UPDATE t.stamps SET id = 30 WHERE id = 3;
         UPDATE t.stamps SET ts3 = '2000-01-01 00:00:00.5' WHERE id = 6;
         DELETE FROM t.stamps WHERE id = 2;",
    );
    let rows = typed_rows(&env, "stamps", &TS_COLS);
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![int(1), int(4), int(5), int(6), int(7), int(30)]
    );
    assert_eq!(rows[0][1], text("2024-06-01 06:30:00"));
    assert_eq!(rows[0][7], text("2024-06-01 06:30:00.654321"));
    assert_eq!(rows[3][4], text("1999-12-31 18:30:00.500000"));
    assert_eq!(rows[5], all(30, "1970-01-01 00:00:01", "1970-01-01 00:00:01"));
    assert_eq!(target_values(&env, "stamps", &TS_COLS), source_utc(&env));
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Character data

const TEXT_COLS: [&str; 9] = ["id", "c", "c100", "v", "v300", "tt", "t", "mt", "lt"];

#[test]
fn utf8mb4_text_of_every_length_class_round_trips_emoji_and_cjk() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.texts (id INT PRIMARY KEY, c CHAR(10), c100 CHAR(100), v VARCHAR(20), v300 VARCHAR(300),
         tt TINYTEXT, t TEXT, mt MEDIUMTEXT, lt LONGTEXT) DEFAULT CHARSET = utf8mb4;",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.texts VALUES
         (1, '😀🎉', '😀🎉', '😀🎉', '😀🎉', '😀🎉', '😀🎉', '😀🎉', '😀🎉'),
         (2, '漢字かなカナ한국어', '漢字かなカナ한국어', '漢字かなカナ한국어', '漢字かなカナ한국어',
             '漢字かなカナ한국어', '漢字かなカナ한국어', '漢字かなカナ한국어', '漢字かなカナ한국어'),
         (3, 'ab  ', 'ab  ', 'ab  ', 'ab  ', 'ab  ', 'ab  ', 'ab  ', 'ab  '),
         (4, '', '', '', '', '', '', '', ''),
         (5, REPEAT('😀', 10), REPEAT('漢', 100), REPEAT('字', 20), REPEAT('😀', 300), REPEAT('é', 127),
             REPEAT('漢', 21845), REPEAT('x', 70000), REPEAT('😀', 20000)),
         (6, 'a\\tb', 'c\\nd', 'e\\\\f', 'it''s', '\"q\"', 'nul\\0in', 'ümlaut', 'Ωμέγα'),
         (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let same = |id: i64, s: &str| row(id, (0..8).map(|_| text(s)).collect());
    let expected_long = row(
        5,
        vec![
            text("😀".repeat(10)),
            text("漢".repeat(100)),
            text("字".repeat(20)),
            text("😀".repeat(300)),
            text("é".repeat(127)),
            text("漢".repeat(21845)),
            text("x".repeat(70000)),
            text("😀".repeat(20000)),
        ],
    );
    let rows = typed_rows(&env, "texts", &TEXT_COLS);
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0], same(1, "😀🎉"));
    assert_eq!(rows[1], same(2, "漢字かなカナ한국어"));
    // CHAR drops trailing spaces (as the source returns it); VARCHAR and TEXT keep them.
    assert_eq!(
        rows[2],
        row(3, texts(&["ab", "ab", "ab  ", "ab  ", "ab  ", "ab  ", "ab  ", "ab  "]))
    );
    assert_eq!(rows[3], same(4, ""));
    assert!(rows[4] == expected_long, "long values differ (lengths etc.)");
    assert_eq!(
        rows[5],
        row(
            6,
            texts(&["a\tb", "c\nd", "e\\f", "it's", "\"q\"", "nul\0in", "ümlaut", "Ωμέγα"])
        )
    );
    assert_eq!(rows[6], row(7, nulls(8)));
    assert_eq!(
        target_hex(&env, "texts", &TEXT_COLS[1..]),
        source_hex(&env, "texts", &TEXT_COLS[1..], false)
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.texts SET v = 'changed 😀', lt = NULL WHERE id = 1;
         UPDATE t.texts SET id = 20 WHERE id = 2;
         UPDATE t.texts SET c = '한' WHERE id = 7;
         DELETE FROM t.texts WHERE id = 4;",
    );
    let rows = typed_rows(&env, "texts", &TEXT_COLS);
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![int(1), int(3), int(5), int(6), int(7), int(20)]
    );
    assert_eq!(
        rows[0],
        row(
            1,
            texts(&["😀🎉", "😀🎉", "changed 😀", "😀🎉", "😀🎉", "😀🎉", "😀🎉"])
                .into_iter()
                .chain([null()])
                .collect()
        )
    );
    assert_eq!(rows[4], row(7, std::iter::once(text("한")).chain(nulls(7)).collect()));
    assert_eq!(rows[5], same(20, "漢字かなカナ한국어"));
    assert_eq!(
        target_hex(&env, "texts", &TEXT_COLS[1..]),
        source_hex(&env, "texts", &TEXT_COLS[1..], false)
    );
    assert!(sluice.stop().success());
}

#[test]
fn latin1_text_is_decoded_as_cp1252_and_ascii_as_text() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.latin (id INT PRIMARY KEY, c CHAR(10) CHARACTER SET latin1,
         v VARCHAR(300) CHARACTER SET latin1, t TEXT CHARACTER SET latin1, a VARCHAR(10) CHARACTER SET ascii);",
    );
    // Row 3 holds every byte 0x01..0xFF, including cp1252's 0x80..0x9F and the five code points
    // cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D), which MySQL maps straight through.
    let all_bytes: String = (1..=255u8).map(|b| format!("{b:02X}")).collect();
    apply(
        &env,
        &mut sluice,
        &format!(
            "INSERT INTO t.latin VALUES
             (1, 'é€', 'é€', 'é€', 'abc'),
             (2, 'Œuvre‰', '“quoted” – ok', 'àáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ', '~!'),
             (3, _latin1 X'80818D8F909D9FA0FFE9', _latin1 X'{all_bytes}', _latin1 X'{all_bytes}', _ascii X'017E7F'),
             (4, '', '', '', ''),
             (5, NULL, NULL, NULL, NULL);"
        ),
    );
    let cols = ["id", "c", "v", "t", "a"];
    let rows = typed_rows(&env, "latin", &cols);
    assert_eq!(rows[0], row(1, texts(&["é€", "é€", "é€", "abc"])));
    assert_eq!(
        rows[1],
        row(
            2,
            texts(&["Œuvre‰", "“quoted” – ok", "àáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ", "~!"])
        )
    );
    assert_eq!(
        rows[2][1],
        text("\u{20AC}\u{81}\u{8D}\u{8F}\u{90}\u{9D}\u{178}\u{A0}\u{FF}\u{E9}")
    );
    assert_eq!(rows[2][4], text("\u{1}~\u{7F}"));
    assert_eq!(rows[3], row(4, texts(&["", "", "", ""])));
    assert_eq!(rows[4], row(5, nulls(4)));
    // Every character equals the source's own latin1 → utf8mb4 conversion.
    assert_eq!(
        target_hex(&env, "latin", &cols[1..]),
        source_hex(&env, "latin", &cols[1..], true)
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.latin SET v = '£¥§', t = NULL WHERE id = 1;
         UPDATE t.latin SET id = 20 WHERE id = 2;
         UPDATE t.latin SET c = 'ß' WHERE id = 5;
         DELETE FROM t.latin WHERE id = 4;",
    );
    let rows = typed_rows(&env, "latin", &cols);
    assert_eq!(rows[0], row(1, vec![text("é€"), text("£¥§"), null(), text("abc")]));
    assert_eq!(rows[2], row(5, vec![text("ß"), null(), null(), null()]));
    assert_eq!(rows[3][0], int(20));
    assert_eq!(rows.len(), 4);
    assert_eq!(
        target_hex(&env, "latin", &cols[1..]),
        source_hex(&env, "latin", &cols[1..], true)
    );
    assert!(sluice.stop().success());
}

#[test]
fn text_in_other_utf8_and_latin1_collations_is_text() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.colls (id INT PRIMARY KEY,
         a VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
         b VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci,
         c VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_nopad_ci,
         d VARCHAR(20) CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci,
         e VARCHAR(20) CHARACTER SET utf8mb3 COLLATE utf8mb3_unicode_ci,
         f VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin,
         g VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_german2_ci);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.colls VALUES (1, '😀漢', '😀漢', '😀漢', 'ñ漢', 'ñ漢', 'é€', 'é€'), (2, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL);",
    );
    let cols = ["id", "a", "b", "c", "d", "e", "f", "g"];
    assert_eq!(
        typed_rows(&env, "colls", &cols),
        vec![
            row(1, texts(&["😀漢", "😀漢", "😀漢", "ñ漢", "ñ漢", "é€", "é€"])),
            row(2, nulls(7)),
        ]
    );
    assert!(sluice.stop().success());
}

#[test]
fn utf8mb4_text_in_a_uca1400_collation_is_text() {
    // MariaDB 10.10+ UCA 14.0 collations have ids above 2047 (utf8mb4_uca1400_ai_ci is 2304);
    // MariaDB 11.5+ makes it the default utf8mb4 collation.
    let (env, mut sluice) = start(
        "CREATE TABLE t.uca (id INT PRIMARY KEY, v VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_uca1400_ai_ci);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.uca VALUES (1, '😀 漢字 é'), (2, NULL);",
    );
    assert_eq!(
        typed_rows(&env, "uca", &["id", "v"]),
        vec![vec![int(1), text("😀 漢字 é")], vec![int(2), null()]]
    );
    assert!(sluice.stop().success());
}

#[test]
fn latin1_text_in_a_nopad_collation_is_decoded_as_latin1() {
    // latin1_swedish_nopad_ci is collation id 1032: a latin1 collation in MariaDB's 1024+ range.
    let (env, mut sluice) = start(
        "CREATE TABLE t.nopad (id INT PRIMARY KEY,
         v VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_nopad_ci);",
    );
    // 'Ã©' is the latin1 bytes C3 A9, which happen to be valid UTF-8 for 'é'.
    apply(&env, &mut sluice, "INSERT INTO t.nopad VALUES (1, 'Ã©');");
    assert_eq!(typed_rows(&env, "nopad", &["id", "v"]), vec![vec![int(1), text("Ã©")]]);
    apply(&env, &mut sluice, "INSERT INTO t.nopad VALUES (2, 'é€'), (3, NULL);");
    assert_eq!(
        typed_rows(&env, "nopad", &["id", "v"]),
        vec![vec![int(1), text("Ã©")], vec![int(2), text("é€")], vec![int(3), null()]]
    );
    assert!(sluice.stop().success());
}

#[test]
fn text_in_a_charset_sluice_does_not_decode_is_a_blob_of_the_source_bytes() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.other (id INT PRIMARY KEY, cy VARCHAR(20) CHARACTER SET cp1251,
         u16 VARCHAR(20) CHARACTER SET utf16, sj TEXT CHARACTER SET sjis);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.other VALUES (1, 'Привет', 'a😀', '漢字'), (2, '', '', ''), (3, NULL, NULL, NULL);",
    );
    let cols = ["id", "cy", "u16", "sj"];
    assert_eq!(
        typed_rows(&env, "other", &cols),
        vec![
            row(1, vec![blob("CFF0E8E2E5F2"), blob("0061D83DDE00"), blob("8ABF8E9A")]),
            row(2, vec![blob(""), blob(""), blob("")]),
            row(3, nulls(3)),
        ]
    );
    assert_eq!(
        target_hex(&env, "other", &cols[1..]),
        source_hex(&env, "other", &cols[1..], false)
    );
    let types: Vec<String> = declared_columns(&env, "other").into_iter().map(|c| c.1).collect();
    assert_eq!(types, vec!["INTEGER", "BLOB", "BLOB", "BLOB"]);
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Binary strings

const BIN_COLS: [&str; 7] = ["id", "b4", "vb", "tb", "b", "mb", "lb"];

#[test]
fn binary_strings_and_blobs_keep_exact_bytes_including_nul_and_ff() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.bins (id INT PRIMARY KEY, b4 BINARY(4), vb VARBINARY(300), tb TINYBLOB, b BLOB,
         mb MEDIUMBLOB, lb LONGBLOB);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.bins VALUES
         (1, X'00FF00FF', X'00FF00FF', X'00FF00FF', X'00FF00FF', X'00FF00FF', X'00FF00FF'),
         (2, X'FF0000FF', X'00', X'FF', X'', X'0000', X'FF00'),
         (3, X'00000001', X'', X'00', X'FFFF', X'', X'00'),
         (4, X'FFFFFFFF', REPEAT(X'00FF', 150), REPEAT(X'FF', 255), REPEAT(X'00', 65535), REPEAT(X'AB', 70000),
             REPEAT(X'00FF', 50000)),
         (5, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let rows = typed_rows(&env, "bins", &BIN_COLS);
    assert_eq!(rows[0], row(1, (0..6).map(|_| blob("00FF00FF")).collect()));
    assert_eq!(
        rows[1],
        row(
            2,
            vec![
                blob("FF0000FF"),
                blob("00"),
                blob("FF"),
                blob(""),
                blob("0000"),
                blob("FF00")
            ]
        )
    );
    assert_eq!(
        rows[2],
        row(
            3,
            vec![
                blob("00000001"),
                blob(""),
                blob("00"),
                blob("FFFF"),
                blob(""),
                blob("00")
            ]
        )
    );
    assert!(
        rows[3]
            == row(
                4,
                vec![
                    blob("FFFFFFFF"),
                    blob(&"00FF".repeat(150)),
                    blob(&"FF".repeat(255)),
                    blob(&"00".repeat(65535)),
                    blob(&"AB".repeat(70000)),
                    blob(&"00FF".repeat(50000)),
                ]
            ),
        "row 4 (long blobs) differs"
    );
    assert_eq!(rows[4], row(5, nulls(6)));
    assert_eq!(
        target_hex(&env, "bins", &BIN_COLS[1..]),
        source_hex(&env, "bins", &BIN_COLS[1..], false)
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.bins SET vb = X'DEADBEEF', b = NULL WHERE id = 1;
         UPDATE t.bins SET id = 20 WHERE id = 2;
         UPDATE t.bins SET lb = X'00' WHERE id = 5;
         DELETE FROM t.bins WHERE id = 3;",
    );
    let rows = typed_rows(&env, "bins", &BIN_COLS);
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![int(1), int(4), int(5), int(20)]
    );
    assert_eq!(
        rows[0],
        row(
            1,
            vec![
                blob("00FF00FF"),
                blob("DEADBEEF"),
                blob("00FF00FF"),
                null(),
                blob("00FF00FF"),
                blob("00FF00FF")
            ]
        )
    );
    assert_eq!(rows[2], row(5, nulls(5).into_iter().chain([blob("00")]).collect()));
    assert_eq!(
        target_hex(&env, "bins", &BIN_COLS[1..]),
        source_hex(&env, "bins", &BIN_COLS[1..], false)
    );
    assert!(sluice.stop().success());
}

#[test]
fn binary_n_values_keep_their_trailing_zero_bytes() {
    let (env, mut sluice) = start("CREATE TABLE t.padded (id INT PRIMARY KEY, b4 BINARY(4));");
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.padded VALUES (1, 'ab'), (2, X'61000000'), (3, X'00000000'), (4, X'00'), (5, '');",
    );
    // The source pads BINARY(n) to n bytes with 0x00; its value is the padded one.
    assert_eq!(
        source_hex(&env, "padded", &["b4"], false),
        vec![
            vec!["1", "61620000"],
            vec!["2", "61000000"],
            vec!["3", "00000000"],
            vec!["4", "00000000"],
            vec!["5", "00000000"],
        ]
    );
    assert_eq!(
        typed_rows(&env, "padded", &["id", "b4"]),
        vec![
            vec![int(1), blob("61620000")],
            vec![int(2), blob("61000000")],
            vec![int(3), blob("00000000")],
            vec![int(4), blob("00000000")],
            vec![int(5), blob("00000000")],
        ]
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// ENUM and SET

#[test]
fn enum_and_set_store_labels_including_the_invalid_enum_and_the_empty_set() {
    let wide_enum: Vec<String> = (1..=300).map(|i| format!("'v{i}'")).collect();
    let set64: Vec<String> = (1..=64).map(|i| format!("'m{i}'")).collect();
    let (env, mut sluice) = start(&format!(
        "CREATE TABLE t.labels (id INT PRIMARY KEY, e ENUM('a','b','c d','ü','x,y'), ew ENUM({}),
         s SET('a','b','c','ü'), s64 SET({})) DEFAULT CHARSET = utf8mb4;",
        wide_enum.join(","),
        set64.join(",")
    ));
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.labels VALUES
         (1, 'a', 'v1', 'a', 'm1'),
         (2, 'bogus', 'v300', '', 'm64'),
         (3, 'x,y', 'v256', 'c,a', 'm1,m64'),
         (4, 'ü', 'v2', 'a,b,c,ü', 'm8,m9,m16,m17,m32,m33,m63'),
         (5, 'c d', 'v255', 'ü', ''),
         (6, NULL, NULL, NULL, NULL);",
    );
    let cols = ["id", "e", "ew", "s", "s64"];
    assert_eq!(
        typed_rows(&env, "labels", &cols),
        vec![
            row(1, texts(&["a", "v1", "a", "m1"])),
            row(2, texts(&["", "v300", "", "m64"])),
            row(3, texts(&["x,y", "v256", "a,c", "m1,m64"])),
            row(4, texts(&["ü", "v2", "a,b,c,ü", "m8,m9,m16,m17,m32,m33,m63"])),
            row(5, texts(&["c d", "v255", "ü", ""])),
            row(6, nulls(4)),
        ]
    );
    assert_eq!(
        target_values(&env, "labels", &cols),
        source_values(&env, "labels", &cols)
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.labels SET e = 'b', s = 'b,c' WHERE id = 1;
         UPDATE t.labels SET id = 20 WHERE id = 2;
         UPDATE t.labels SET e = 'a', s64 = 'm2' WHERE id = 6;
         DELETE FROM t.labels WHERE id = 3;",
    );
    assert_eq!(
        typed_rows(&env, "labels", &cols),
        vec![
            row(1, texts(&["b", "v1", "b,c", "m1"])),
            row(4, texts(&["ü", "v2", "a,b,c,ü", "m8,m9,m16,m17,m32,m33,m63"])),
            row(5, texts(&["c d", "v255", "ü", ""])),
            row(6, vec![text("a"), null(), null(), text("m2")]),
            row(20, texts(&["", "v300", "", "m64"])),
        ]
    );
    assert_eq!(
        target_values(&env, "labels", &cols),
        source_values(&env, "labels", &cols)
    );
    assert!(sluice.stop().success());
}

#[test]
fn enum_and_set_labels_outside_the_bmp_round_trip() {
    // information_schema renders COLUMN_TYPE in utf8mb3, where a 4-byte character such as an
    // emoji becomes '?'; the TABLE_MAP carries the real labels.
    let (env, mut sluice) = start(
        "CREATE TABLE t.emoji_labels (id INT PRIMARY KEY, e ENUM('a','😀'), s SET('a','😀'))
         DEFAULT CHARSET = utf8mb4;",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.emoji_labels VALUES (1, '😀', 'a,😀'), (2, 'a', '😀');",
    );
    assert_eq!(
        typed_rows(&env, "emoji_labels", &["id", "e", "s"]),
        vec![row(1, texts(&["😀", "a,😀"])), row(2, texts(&["a", "😀"]))]
    );
    assert!(sluice.stop().success());
}

#[test]
fn enum_labels_with_quotes_and_backslashes_round_trip() {
    let (env, mut sluice) = start(
        r"CREATE TABLE t.quoted (id INT PRIMARY KEY, e ENUM('it''s', 'back\\slash', 'plain'), s SET('it''s', 'back\\slash'));",
    );
    apply(
        &env,
        &mut sluice,
        r"INSERT INTO t.quoted VALUES (1, 'it''s', 'it''s,back\\slash'), (2, 'back\\slash', 'back\\slash');",
    );
    assert_eq!(
        typed_rows(&env, "quoted", &["id", "e", "s"]),
        vec![
            row(1, texts(&["it's", r"it's,back\slash"])),
            row(2, texts(&[r"back\slash", r"back\slash"])),
        ]
    );
    assert!(sluice.stop().success());
}

#[test]
fn latin1_enum_and_set_labels_are_decoded_as_latin1() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.latin_labels (id INT PRIMARY KEY, e ENUM('é','€','x') CHARACTER SET latin1,
         s SET('é','€','x') CHARACTER SET latin1);",
    );
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.latin_labels VALUES (1, 'é', 'é,€'), (2, '€', 'x'), (3, 'x', '');",
    );
    assert_eq!(
        typed_rows(&env, "latin_labels", &["id", "e", "s"]),
        vec![
            row(1, texts(&["é", "é,€"])),
            row(2, texts(&["€", "x"])),
            row(3, texts(&["x", ""])),
        ]
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// BIT

#[test]
fn bit_columns_store_the_bits_as_an_unsigned_number() {
    let (env, mut sluice) = start("CREATE TABLE t.bits (id INT PRIMARY KEY, b1 BIT(1), b10 BIT(10), b64 BIT(64));");
    apply(
        &env,
        &mut sluice,
        "INSERT INTO t.bits VALUES
         (1, b'0', b'0000000000', 0),
         (2, b'1', b'1111111111', 0xFFFFFFFFFFFFFFFF),
         (3, 1, 512, 9223372036854775807),
         (4, 0, 1, 9223372036854775808),
         (5, NULL, NULL, NULL);",
    );
    let cols = ["id", "b1", "b10", "b64"];
    assert_eq!(
        typed_rows(&env, "bits", &cols),
        vec![
            row(1, vec![int(0), int(0), int(0)]),
            row(2, vec![int(1), int(1023), text(u64::MAX)]),
            row(3, vec![int(1), int(512), int(i64::MAX)]),
            row(4, vec![int(0), int(1), text("9223372036854775808")]),
            row(5, nulls(3)),
        ]
    );
    assert_eq!(
        target_values(&env, "bits", &cols),
        source_values(&env, "bits", &["id", "b1 + 0", "b10 + 0", "b64 + 0"])
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.bits SET b10 = b'0101010101', b64 = 1 WHERE id = 2;
         UPDATE t.bits SET id = 40 WHERE id = 4;
         UPDATE t.bits SET b1 = 1 WHERE id = 5;
         DELETE FROM t.bits WHERE id = 1;",
    );
    assert_eq!(
        typed_rows(&env, "bits", &cols),
        vec![
            row(2, vec![int(1), int(341), int(1)]),
            row(3, vec![int(1), int(512), int(i64::MAX)]),
            row(5, vec![int(1), null(), null()]),
            row(40, vec![int(0), int(1), text("9223372036854775808")]),
        ]
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// JSON

#[test]
fn json_round_trips_as_the_source_text_and_works_with_sqlite_json_functions() {
    let (env, mut sluice) = start("CREATE TABLE t.docs (id INT PRIMARY KEY, j JSON);");
    apply(
        &env,
        &mut sluice,
        r#"INSERT INTO t.docs VALUES
           (1, '{"a": 1, "b": [true, null, "x"]}'),
           (2, '[]'),
           (3, '"😀 é"'),
           (4, '{"n": {"k": 1.5e10, "s": "q\\"uote"}}'),
           (5, NULL);"#,
    );
    assert_eq!(
        typed_rows(&env, "docs", &["id", "j"]),
        vec![
            vec![int(1), text(r#"{"a": 1, "b": [true, null, "x"]}"#)],
            vec![int(2), text("[]")],
            vec![int(3), text(r#""😀 é""#)],
            vec![int(4), text(r#"{"n": {"k": 1.5e10, "s": "q\"uote"}}"#)],
            vec![int(5), null()],
        ]
    );
    assert_eq!(
        target_hex(&env, "docs", &["j"]),
        source_hex(&env, "docs", &["j"], false)
    );
    assert_eq!(
        env.target_rows("SELECT json_extract(j, '$.b[2]'), json_extract(j, '$.a') FROM docs WHERE id = 1"),
        vec![vec!["x", "1"]]
    );

    apply(
        &env,
        &mut sluice,
        "UPDATE t.docs SET j = JSON_SET(j, '$.a', 2) WHERE id = 1;
         UPDATE t.docs SET id = 30 WHERE id = 3;
         DELETE FROM t.docs WHERE id = 2;",
    );
    assert_eq!(
        env.target_rows("SELECT id FROM docs ORDER BY id"),
        vec![vec!["1"], vec!["4"], vec!["5"], vec!["30"]]
    );
    assert_eq!(
        env.target_rows("SELECT json_extract(j, '$.a') FROM docs WHERE id = 1"),
        vec![vec!["2"]]
    );
    assert_eq!(
        target_hex(&env, "docs", &["j"]),
        source_hex(&env, "docs", &["j"], false)
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Keys of several types

#[test]
fn composite_keys_of_mixed_types_locate_rows_for_update_and_delete() {
    let (env, mut sluice) = start(
        "CREATE TABLE t.keyed (vb VARBINARY(8), d DECIMAL(10,2), dt DATETIME(6), ts TIMESTAMP(6) NOT NULL,
         s VARCHAR(10) CHARACTER SET utf8mb4, v INT, PRIMARY KEY (vb, d, dt, ts, s));",
    );
    apply(
        &env,
        &mut sluice,
        "SET time_zone = '+05:30';
         INSERT INTO t.keyed VALUES
         (X'00FF', -1.50, '2024-01-01 00:00:00.000001', '2024-01-01 05:30:00.5', '😀', 1),
         (X'00FF', -1.50, '2024-01-01 00:00:00.000001', '2024-01-01 05:30:00.5', 'é', 2),
         (X'', 0, '0000-00-00 00:00:00', '1970-01-01 05:30:01', '', 3);",
    );
    let cols = "hex(vb), d, dt, ts, s, v";
    let sql = format!("SELECT {cols} FROM keyed ORDER BY v");
    assert_eq!(
        env.target_rows(&sql),
        vec![
            vec![
                "00FF",
                "-1.50",
                "2024-01-01 00:00:00.000001",
                "2024-01-01 00:00:00.500000",
                "😀",
                "1"
            ],
            vec![
                "00FF",
                "-1.50",
                "2024-01-01 00:00:00.000001",
                "2024-01-01 00:00:00.500000",
                "é",
                "2"
            ],
            vec!["", "0.00", "0000-00-00 00:00:00", "1970-01-01 00:00:01", "", "3"],
        ]
    );
    apply(
        &env,
        &mut sluice,
        "SET time_zone = '+05:30';
         UPDATE t.keyed SET v = 10 WHERE s = '😀';
         UPDATE t.keyed SET dt = '2025-05-05 05:05:05', ts = '2025-05-05 05:05:05' WHERE s = 'é';
         DELETE FROM t.keyed WHERE v = 3;",
    );
    assert_eq!(
        env.target_rows(&sql),
        vec![
            vec!["00FF", "-1.50", "2025-05-05 05:05:05", "2025-05-04 23:35:05", "é", "2"],
            vec![
                "00FF",
                "-1.50",
                "2024-01-01 00:00:00.000001",
                "2024-01-01 00:00:00.500000",
                "😀",
                "10"
            ],
        ]
    );
    assert!(sluice.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Declared column types and NULL in every nullable column

// YEAR comes last: a YEAR before numeric columns shifts MariaDB's signedness bitmap, which
// `integers_after_a_year_column_*` check on their own.
const ALL_TYPES: &str = "CREATE TABLE t.alltypes (id INT PRIMARY KEY, ti TINYINT NOT NULL, tiu TINYINT UNSIGNED,
    si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT,
    biu BIGINT UNSIGNED, b1 BIT(1), b10 BIT(10), b63 BIT(63), b64 BIT(64), f FLOAT, d DOUBLE,
    de DECIMAL(10,2), dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(6) NULL, c CHAR(5), v VARCHAR(10) NOT NULL,
    tx TEXT, l1 VARCHAR(5) CHARACTER SET latin1, bn BINARY(4), vb VARBINARY(8), bl BLOB, e ENUM('a'), s SET('a'),
    j JSON, y YEAR) DEFAULT CHARSET = utf8mb4;";

/// `(column, declared type)` per docs/type-mapping.md for `t.alltypes`.
const ALL_TYPES_DECLARED: [(&str, &str); 33] = [
    ("id", "INTEGER"),
    ("ti", "INTEGER"),
    ("tiu", "INTEGER"),
    ("si", "INTEGER"),
    ("siu", "INTEGER"),
    ("mi", "INTEGER"),
    ("miu", "INTEGER"),
    ("i", "INTEGER"),
    ("iu", "INTEGER"),
    ("bi", "INTEGER"),
    ("biu", "ANY"),
    ("b1", "INTEGER"),
    ("b10", "INTEGER"),
    ("b63", "INTEGER"),
    ("b64", "ANY"),
    ("f", "REAL"),
    ("d", "REAL"),
    ("de", "TEXT"),
    ("dt", "TEXT"),
    ("tm", "TEXT"),
    ("dtm", "TEXT"),
    ("ts", "TEXT"),
    ("c", "TEXT"),
    ("v", "TEXT"),
    ("tx", "TEXT"),
    ("l1", "TEXT"),
    ("bn", "BLOB"),
    ("vb", "BLOB"),
    ("bl", "BLOB"),
    ("e", "TEXT"),
    ("s", "TEXT"),
    ("j", "TEXT"),
    ("y", "INTEGER"),
];

/// Checks the declared types, NOT NULL flags and STRICTness of `alltypes`, and that its row
/// with NULL in every nullable column arrived as NULLs.
fn check_all_types(env: &Env) {
    let expected: Vec<(String, String, bool)> = ALL_TYPES_DECLARED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string(), matches!(*n, "id" | "ti" | "v")))
        .collect();
    assert_eq!(declared_columns(env, "alltypes"), expected);
    assert_eq!(
        env.target_rows("SELECT strict FROM pragma_table_list WHERE name = 'alltypes'"),
        vec![vec!["1"]]
    );
    let cols: Vec<&str> = ALL_TYPES_DECLARED.iter().map(|(n, _)| *n).collect();
    let rows = typed_rows(env, "alltypes", &cols);
    let mut want = vec![int(1), int(-5)];
    want.extend(nulls(21));
    want.push(text(""));
    want.extend(nulls(9));
    assert_eq!(rows, vec![want]);
}

const ALL_TYPES_NULL_ROW: &str = "INSERT INTO t.alltypes (id, ti, v) VALUES (1, -5, '');";

#[test]
fn declared_column_types_follow_the_mapping_for_tables_present_at_startup() {
    let (env, mut sluice) = start(ALL_TYPES);
    apply(&env, &mut sluice, ALL_TYPES_NULL_ROW);
    check_all_types(&env);
    assert!(sluice.stop().success());
}

#[test]
fn declared_column_types_follow_the_mapping_for_tables_created_while_running() {
    let (env, mut sluice) = start("");
    apply(&env, &mut sluice, &format!("{ALL_TYPES}\n{ALL_TYPES_NULL_ROW}"));
    check_all_types(&env);
    assert!(sluice.stop().success());
}
