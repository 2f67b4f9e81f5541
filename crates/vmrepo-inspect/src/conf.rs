//! The guest's configuration text (fstab, inittab, grub menus, shell start-up
//! files) read the way the programs that use it read it: a `#` at the start
//! of a line or after a blank starts a comment, so that a line an admin
//! commented out is never taken as evidence.

/// The lines of `text` without their comments, blank lines left out.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(uncomment).map(str::trim).filter(|l| !l.is_empty())
}

/// `line` up to its comment: a `#` at its start or after a blank (a `#`
/// inside a word, as in `$#argv` or `a#b`, is not one).
fn uncomment(line: &str) -> &str {
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_blank {
            return &line[..i];
        }
        prev_blank = c.is_whitespace();
    }
    line
}

/// The words of a line: runs of characters other than blanks and the shell's
/// and inittab's separators (`:`, `;`, `=`, `,`, quotes).
pub fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| c.is_whitespace() || matches!(c, ':' | ';' | '=' | ',' | '"' | '\'' | '`'))
        .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_end_where_the_shell_ends_them() {
        let text = "# source $GROUP_DIR/star_cshrc.csh\n  \nsetenv A 1 # set A\nif ($#argv) echo a#b\n\t# indented\n";
        assert_eq!(lines(text).collect::<Vec<_>>(), ["setenv A 1", "if ($#argv) echo a#b"]);
    }

    #[test]
    fn inittab_words() {
        let w: Vec<&str> = words("co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav").collect();
        assert_eq!(w, ["co", "2345", "respawn", "/sbin/agetty", "xvc0", "9600", "vt100-nav"]);
    }
}
