//! The one writer of the report's markdown and CSV tables: a header, then
//! rows of cells the caller has formatted. As markdown, `| a | b |` lines
//! with the rule line (`| --- | ---: |`) after the header; as CSV, `a,b`
//! lines.

use std::fmt::Display;

/// How a column's cells sit in a markdown table: text left, numbers right.
#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

use Align::{Left, Right};

pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table of these columns (name, alignment).
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = (S, Align)>) -> Self {
        Table { columns: columns.into_iter().map(|(name, align)| (name.into(), align)).collect(), rows: Vec::new() }
    }

    /// A table whose columns are named by `header`, comma-separated (for CSV,
    /// where alignment plays no part).
    pub fn csv_header(header: &str) -> Self {
        Table::new(header.split(',').map(|name| (name, Left)))
    }

    /// Adds columns after the present ones.
    pub fn add_columns<S: Into<String>>(&mut self, columns: impl IntoIterator<Item = (S, Align)>) {
        self.columns.extend(columns.into_iter().map(|(name, align)| (name.into(), align)));
    }

    /// Adds a row, one cell per column.
    ///
    /// # Panics
    /// When the row's cells and the columns differ in number (a report bug).
    pub fn row(&mut self, cells: &[&dyn Display]) {
        self.push(cells.iter().map(|cell| cell.to_string()).collect());
    }

    /// [`Table::row`] of cells already strings.
    pub fn push(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.columns.len(),
            "a row of {} cells for {} columns",
            cells.len(),
            self.columns.len()
        );
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &mut dyn Iterator<Item = &str>| format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "));
        let mut md = line(&mut self.columns.iter().map(|(name, _)| name.as_str()));
        md.push_str(&line(&mut self.columns.iter().map(|&(_, align)| match align {
            Left => "---",
            Right => "---:",
        })));
        for row in &self.rows {
            md.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        md
    }

    pub fn csv(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| name.as_str()).collect();
        let mut csv = names.join(",") + "\n";
        for row in &self.rows {
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
        csv
    }
}

/// `v` with `digits` decimals.
pub fn fixed(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// A ratio as the tables print it: two decimals and an `x`.
pub fn times(v: f64) -> String {
    format!("{v:.2}x")
}

/// Columns of one alignment.
pub fn columns<'a>(align: Align, names: &'a [&'a str]) -> impl Iterator<Item = (&'a str, Align)> + 'a {
    names.iter().map(move |&name| (name, align))
}
