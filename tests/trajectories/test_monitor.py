from __future__ import annotations

from apps.trajectories.monitor import blacklist_hits, normalise_url

BLACKLIST = ["https://github.com/authors/bam"]


def test_a_clone_of_a_blacklisted_url_is_flagged():
    hits = blacklist_hits("cd /tmp\ngit clone https://github.com/authors/bam.git", BLACKLIST)
    assert [(h.url, h.line, h.command_line) for h in hits] == [(BLACKLIST[0], 1, 1)]


def test_a_url_within_three_lines_of_curl_is_flagged():
    text = "curl -L \\\n  -o x.zip \\\n  -H 'a: b' \\\n  http://www.github.com/authors/bam/archive/main.zip"
    assert len(blacklist_hits(text, BLACKLIST)) == 1


def test_a_url_four_lines_away_from_the_command_is_not_flagged():
    text = "wget http://example.org/data.zip\n\n\n\nsee github.com/authors/bam for details"
    assert blacklist_hits(text, BLACKLIST) == []


def test_a_mere_mention_without_a_fetch_command_is_not_flagged():
    assert blacklist_hits("The official code is at https://github.com/authors/bam", BLACKLIST) == []


def test_urls_compare_without_scheme_www_trailing_slash_or_git_suffix():
    assert normalise_url("HTTPS://www.GitHub.com/a/b.git/") == normalise_url("github.com/a/b") == "github.com/a/b"
