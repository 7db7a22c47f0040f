//! The printed table (each figure beside the direct upstream's and nginx's,
//! with the ratios) and the list of the targets, met or not.

/// Columns of the table: the direct upstream, the gate, nginx.
pub const DIRECT: usize = 0;
pub const GATE: usize = 1;
pub const NGINX: usize = 2;

pub struct Row {
    pub label: String,
    pub unit: &'static str,
    pub values: [Option<f64>; 3],
    /// The target for this figure, as text.
    pub target: String,
}

pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

pub struct Check {
    pub what: String,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
    /// By how much it is missed (or passed), e.g. "12% short".
    pub margin: String,
}

pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if !v.is_finite() => "n/a".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

pub fn print_sections(sections: &[Section]) {
    let width = sections
        .iter()
        .flat_map(|s| s.rows.iter())
        .map(|r| r.label.len() + r.unit.len() + 3)
        .max()
        .unwrap_or(30)
        .max(30);
    println!(
        "{:<width$} {:>10} {:>10} {:>10} {:>12} {:>11}  target",
        "figure", "direct", "gate", "nginx", "gate/direct", "gate/nginx"
    );
    for s in sections {
        println!("-- {}", s.title);
        for r in &s.rows {
            let label = format!("{} ({})", r.label, r.unit);
            println!(
                "{:<width$} {:>10} {:>10} {:>10} {:>12} {:>11}  {}",
                label,
                fmt_value(r.values[DIRECT]),
                fmt_value(r.values[GATE]),
                fmt_value(r.values[NGINX]),
                fmt_ratio(ratio(r.values[GATE], r.values[DIRECT])),
                fmt_ratio(ratio(r.values[GATE], r.values[NGINX])),
                r.target
            );
        }
    }
}

pub fn print_checks(checks: &[Check]) {
    let met = checks.iter().filter(|c| c.met).count();
    println!("\nTargets of issue 6: {met} of {} met", checks.len());
    for c in checks {
        println!(
            "  [{}] {}: wanted {}, measured {} ({})",
            if c.met { "met" } else { "NOT MET" },
            c.what,
            c.wanted,
            c.measured,
            c.margin
        );
    }
}

/// A check that `value` is at least `min` (`at_least`) or at most `max`.
pub fn check(
    what: &str,
    wanted: String,
    value: f64,
    limit: f64,
    at_least: bool,
    unit: &str,
) -> Check {
    let met = if at_least {
        value >= limit
    } else {
        value <= limit
    };
    let margin = if !value.is_finite() || limit == 0.0 {
        "not measured".to_string()
    } else if at_least {
        let pct = (value / limit - 1.0) * 100.0;
        if met {
            format!("{pct:.0}% above")
        } else {
            format!("{:.0}% short", -pct)
        }
    } else {
        let pct = (value / limit - 1.0) * 100.0;
        if met {
            format!("{:.0}% under", -pct)
        } else {
            format!("{pct:.0}% over")
        }
    };
    Check {
        what: what.into(),
        wanted,
        measured: format!("{} {unit}", fmt_value(Some(value)))
            .trim()
            .to_string(),
        met: met && value.is_finite(),
        margin,
    }
}

pub fn self_check() {
    assert_eq!(fmt_value(Some(1234.4)), "1234");
    assert_eq!(fmt_value(Some(0.1234)), "0.123");
    assert_eq!(ratio(Some(1.0), Some(2.0)), Some(0.5));
    assert_eq!(ratio(Some(1.0), None), None);
    let c = check("x", "a".into(), 90.0, 100.0, true, "u");
    assert!(!c.met);
    assert_eq!(c.margin, "10% short");
    let c = check("x", "a".into(), 0.2, 0.3, false, "s");
    assert!(c.met);
    assert_eq!(c.margin, "33% under");
}
