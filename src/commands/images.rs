//! `pybuild images`: the tagged images, as a table like `docker images`, IDs only
//! (`-q`) or one JSON object per line (`--format json`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{GlobalArgs, ImagesArgs, ListFormat};

/// List the store's images.
pub fn run(args: &ImagesArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let images = pybuild::store::images(&store)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let id = |digest: &str| {
        if args.no_trunc {
            digest.to_string()
        } else {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            hex.chars().take(12).collect()
        }
    };
    let mut out = String::new();
    if args.quiet {
        for image in &images {
            out.push_str(&id(&image.id.to_string()));
            out.push('\n');
        }
        return super::write_stdout(&out);
    }
    if args.format == ListFormat::Json {
        for image in &images {
            let (repo, tag) = split_name(&image.name);
            let line = serde_json::json!({
                "Repository": repo,
                "Tag": tag,
                "ID": id(&image.id.to_string()),
                "Digest": image.digest.to_string(),
                "CreatedAt": image.created,
                "Size": super::human_size(image.size),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        return super::write_stdout(&out);
    }
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for image in &images {
        let (repo, tag) = split_name(&image.name);
        let created = image
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .map_or_else(|| "N/A".to_string(), |t| ago(now - t));
        rows.push([
            repo.to_string(),
            tag.to_string(),
            id(&image.id.to_string()),
            created,
            super::human_size(image.size),
        ]);
    }
    // Columns padded to the widest cell plus three spaces, as docker's tabwriter.
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[i] + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    super::write_stdout(&out)
}

/// `repo:tag` → (`repo`, `tag`); a `:` before the last `/` is a registry port.
/// Names pinned by digest have no tag (`<none>`).
fn split_name(name: &str) -> (&str, &str) {
    if let Some((repo, _)) = name.split_once('@') {
        return (repo, "<none>");
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "<none>"),
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.123Z`,
/// `...+02:00`), as image configs carry them.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(time_end);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let offset = match zone.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let (oh, om) = zone[1..].split_once(':')?;
            let secs = oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60;
            if sign == '+' { secs } else { -secs }
        }
        _ => 0,
    };
    Some(days_from_civil(y, m, day) * 86400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the standard
/// era-based computation).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration the way `docker images` words it (`2 hours ago`).
fn ago(secs: i64) -> String {
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    let text = if secs < 1 {
        "Less than a second".to_string()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes < 2 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours < 2 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 14 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 60 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    };
    format!("{text} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_docker() {
        assert_eq!(split_name("app:1"), ("app", "1"));
        assert_eq!(
            split_name("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(
            split_name("localhost:5000/app"),
            ("localhost:5000/app", "<none>")
        );
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.999Z"),
            Some(1_704_164_645)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T05:04:05+02:00"),
            Some(1_704_164_645)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(ago(30), "30 seconds ago");
        assert_eq!(ago(3 * 3600), "3 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        assert_eq!(ago(3 * 365 * 86400), "3 years ago");
    }

    #[test]
    fn sizes() {
        assert_eq!(super::super::human_size(512), "512B");
        assert_eq!(super::super::human_size(7_800_000), "7.8MB");
        assert_eq!(super::super::human_size(1_234_567_890), "1.23GB");
        assert_eq!(super::super::human_size(2_000), "2kB");
    }
}
