import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard.report import render_report
from flagcore.store.store import VERDICTS

st.title("Reviews and sign-off")
rid = ac.require_run()
store = ac.store()
st.caption("Reviews are append-only: each records the reviewer, the verdict, the comment, the time and the HIFA "
           "verdicts of the run at that moment. Nothing is edited or deleted.")
with st.form("review", clear_on_submit=True):
    reviewer = st.text_input("Reviewer", max_chars=200)
    verdict = st.radio("Verdict", VERDICTS, horizontal=True)
    comment = st.text_area("Comment", max_chars=20_000)
    if st.form_submit_button("Sign off", type="primary"):
        try:
            review_id = store.add_review(rid, reviewer, verdict, comment)
        except ac.FlagcoreError as e:
            st.error(ac.plain(str(e)))
        else:
            st.success(f"Review {review_id} recorded.")

history = store.reviews(rid)
st.subheader(f"History of run {rid}")
if history.empty:
    st.info("No reviews yet.")
for _, r in history.sort_values("review_id", ascending=False).iterrows():
    with st.container(border=True, key=f"review-{int(r['review_id'])}"):
        passed = sum(1 for c in r["hifa_snapshot"] or [] if c["passed"])
        st.caption(f"Review {int(r['review_id'])}, {r['created_at']:%Y-%m-%d %H:%M} UTC: {r['verdict']}; "
                   f"{passed} of {len(r['hifa_snapshot'] or [])} HIFA criteria passed at the time")
        # user text is shown with st.text: never interpreted as Markdown or HTML
        st.text(f"Reviewer: {r['reviewer']}")
        if r["comment"]:
            st.text(r["comment"])



@st.cache_data(ttl=ac.RUN_TTL, show_spinner=False)
def report(path: str, run_id: int, fmt: str, latest_review: int) -> str:  # new review, new report
    return render_report(ac.Store(path), run_id, fmt)


latest = int(history["review_id"].max()) if not history.empty else 0
st.subheader("Findings report")
c = st.columns(2)
c[0].download_button("Download Markdown", report(ac.store_key(), rid, "md", latest), file_name=f"flagcore-run-{rid}.md",
                     mime="text/markdown")
c[1].download_button("Download HTML", report(ac.store_key(), rid, "html", latest),
                     file_name=f"flagcore-run-{rid}.html", mime="text/html")
