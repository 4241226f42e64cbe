"""Reviews: the sign-off form, the run's review history, and the findings report."""

import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard import views
from flagcore.vocab import VERDICTS

st.title("Reviews and sign-off")
rid = ac.require_run()
st.caption(
    "Reviews are append-only: each records the reviewer, the verdict, the comment, the time and the "
    "HIFA verdicts of the run at that moment. Nothing is edited or deleted."
)
with st.form("review", clear_on_submit=True):
    reviewer = st.text_input("Reviewer", max_chars=200)
    verdict = st.radio("Verdict", VERDICTS, horizontal=True)
    comment = st.text_area("Comment", max_chars=20_000)
    if st.form_submit_button("Sign off", type="primary"):
        try:
            review_id = ac.add_review(rid, reviewer, verdict, comment)
        except ac.FlagcoreError as e:
            st.error(ac.plain(str(e)))
        else:
            st.success(f"Review {review_id} recorded.")

history = ac.store().reviews(rid)  # read fresh: reviews are what changes while a page is open
st.subheader(f"History of run {rid}")
if history.empty:
    st.info("No reviews yet.")
for _, r in history.sort_values("review_id", ascending=False).iterrows():
    with st.container(border=True, key=f"review-{int(r['review_id'])}"):
        st.caption(views.review_caption(r))
        # user text is shown with st.text: never interpreted as Markdown or HTML
        st.text(f"Reviewer: {r['reviewer']}")
        if r["comment"]:
            st.text(r["comment"])

path = ac.store_key()
st.subheader("Findings report")
c = st.columns(2)
c[0].download_button(
    "Download Markdown", ac.report(path, rid, "md"), file_name=f"flagcore-run-{rid}.md", mime="text/markdown"
)
c[1].download_button(
    "Download HTML", ac.report(path, rid, "html"), file_name=f"flagcore-run-{rid}.html", mime="text/html"
)
