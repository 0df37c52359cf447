"""HTML → text: headings, blocks, skipped elements, entities, titles, speed."""

from __future__ import annotations

import time

from parallelrag.loaders import html_to_text, load_file


def test_headings_levels_and_permalink_marks() -> None:
    text, title = html_to_text(
        "<h1>Top</h1><p>a</p><h3>Deep <a class='headerlink' href='#x'>¶</a></h3><h6>Six</h6>"
    )
    assert text == "# Top\n\na\n\n### Deep\n\n###### Six"
    assert title == "Top"  # no <title>: the first h1


def test_inline_whitespace_collapses_and_blocks_break() -> None:
    text, _ = html_to_text("<div>one\n   two <b>three</b></div><div>four<br>five</div>x")
    assert text == "one two three\nfour\nfive\nx"


def test_skipped_elements_and_nesting() -> None:
    html = (
        "<p>keep</p><script>if (a < b) { x = '</p>' }</script>"
        "<svg><title>svg title</title><text>drawn</text></svg>"
        "<template><p>tmpl</p></template><style>p{}</style><p>also</p>"
    )
    text, title = html_to_text(html)
    assert text == "keep\n\nalso"
    assert title is None


def test_nested_lists_and_pre() -> None:
    html = "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul><pre>  x = 1\n\n  y = 2\n</pre><p>end</p>"
    text, _ = html_to_text(html)
    assert text == "- a\n  - b\n- c\n\n  x = 1\n\n  y = 2\n\nend"


def test_entities_and_malformed_markup() -> None:
    text, title = html_to_text(
        "<title>A &lt; B</title><p>x &amp; y &#x41; &copy; &unknown; <p>unclosed <i>tags"
    )
    assert title == "A < B"
    assert text == "x & y A © &unknown;\n\nunclosed tags"


def test_html_file_with_meta_charset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = '<html><head><meta charset="windows-1251"><title>Т</title></head><body><h2>Раздел</h2></body></html>'
    p = tmp_path / "ru.htm"
    p.write_bytes(page.encode("cp1251"))
    docs = load_file(p)
    assert isinstance(docs, list)
    assert docs[0].text == "## Раздел"
    assert docs[0].metadata["title"] == "Т"


def test_large_page_converts_at_megabytes_per_second() -> None:
    section = (
        "<h2>Section {i}</h2><p>Some <a href='#'>linked</a> text with <code>code</code> and "
        "<em>emphasis</em>, enough words to look like documentation {i}.</p>"
        "<ul><li>item one</li><li>item two</li></ul><pre>def f():\n    return {i}</pre>"
    )
    html = "<html><body>" + "".join(section.format(i=i) for i in range(8000)) + "</body></html>"
    start = time.perf_counter()
    text, _ = html_to_text(html)
    elapsed = time.perf_counter() - start
    assert text.count("## Section ") == 8000
    assert text.endswith("def f():\n    return 7999")
    mb_per_s = len(html) / 1e6 / elapsed
    # measured ≈5-7 MB/s on this machine; the floor catches quadratic behaviour on a busy box
    assert mb_per_s > 1.0, f"{mb_per_s:.2f} MB/s"


def test_page_chrome_is_dropped() -> None:
    from parallelrag.loaders.html import html_to_text

    html = (
        '<div class="related" role="navigation"><ul><li>previous | next</li></ul></div>'
        '<div class="sphinxsidebar"><h3>Table of contents</h3></div>'
        '<h1>Title<a class="headerlink" href="#t">¶</a></h1><p>Body <b>text</b></p>'
        "<nav>menu</nav><div class='footer'>© copyright</div><p>end</p>"
    )
    text, title = html_to_text(html)
    assert text == "# Title\n\nBody text\n\nend"
    assert title == "Title"


def test_outline_lists_headings_at_their_line_offsets() -> None:
    from parallelrag.loaders.html import HtmlText

    parser = HtmlText()
    parser.feed("<title>T</title><nav><h2>Menu</h2></nav><h1>Top</h1><p>a</p>"
                "<h3>Deep <a class='headerlink' href='#x'>¶</a></h3><p>x</p><h6>Six</h6>"
                "<h2> </h2><p>end</p>")
    parser.close()
    assert parser.outline == [(0, 1, "Top"), (10, 3, "Deep"), (23, 6, "Six")]  # chrome, empty out
    for off, level, text in parser.outline:
        assert parser.text[off:].startswith("#" * level + " " + text)


def test_loaded_document_carries_the_outline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "o.html"
    p.write_text("<h1>A</h1><p>one</p><h2>B</h2><p>two</p>")
    docs = load_file(p)
    assert isinstance(docs, list)
    assert docs[0].outline == [(0, 1, "A"), (10, 2, "B")]
    assert docs[0].text == "# A\n\none\n\n## B\n\ntwo"
