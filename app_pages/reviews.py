"""Reviews: the run's review status, the sign-off form (signed by the login, a trusted proxy header or a
typed name), the run's review history, and the findings report."""

import streamlit as st

from flagcore.dashboard import identity, views
from flagcore.dashboard import state as ac
from flagcore.dashboard.panels import show_status
from flagcore.vocab import VERDICTS

st.title("Reviews and sign-off")
rid = ac.require_run()
path = ac.store_key()
policy = ac.review_policy()
run = ac.run_info(path, rid)
show_status(ac.run_status(path, rid, policy), run.get("author"))
st.caption(
    "Reviews are append-only: each records the reviewer, where that name came from (a login, a trusted "
    "proxy header, or typed and unverified), the verdict, the comment, the time and the HIFA verdicts "
    "of the run at that moment. Nothing is edited or deleted."
)

recorded = st.session_state.pop("review_recorded", None)
if recorded is not None:  # signed on the previous run, which reran so that the status above counts it
    st.success(f"Review {recorded} recorded.")
# who signs is decided on every run, the submit's included: a form cannot keep an earlier identity
try:
    signer = identity.reviewer_identity()
except ac.FlagcoreError as e:  # a login or trusted header is configured but this request lacks it
    st.error(ac.plain(str(e)))
    if getattr(e, "login", False):
        st.button("Log in", on_click=st.login, key="review_login")
else:
    with st.form("review", clear_on_submit=True):
        if signer is not None:
            st.markdown(f"Signing as **{ac.plain(signer.name)}** ({signer.label})")
            author = run.get("author")
            if author and not policy.author_may_approve and signer.name.casefold() == author.casefold():
                st.caption("You are this run's author: under the policy your approval does not count.")
        else:
            typed = st.text_input(
                "Reviewer",
                max_chars=identity.MAX_NAME,
                help="no login or trusted header is configured: the name is stored as typed, unverified",
            )
        verdict = st.radio("Verdict", VERDICTS, horizontal=True)
        comment = st.text_area("Comment", max_chars=20_000)
        if st.form_submit_button("Sign off", type="primary"):
            try:
                review_id = ac.add_review(rid, signer or identity.typed(typed), verdict, comment)
            except ac.FlagcoreError as e:
                st.error(ac.plain(str(e)))
            else:
                st.session_state["review_recorded"] = review_id
                st.rerun()

history = ac.store().reviews(rid)  # read fresh: reviews are what changes while a page is open
st.subheader(f"History of run {rid}")
if history.empty:
    st.info("No reviews yet.")
for _, r in history.sort_values("review_id", ascending=False).iterrows():
    with st.container(border=True, key=f"review-{int(r['review_id'])}"):
        st.caption(views.review_caption(r))
        # user text is shown with st.text: never interpreted as Markdown or HTML
        st.text(views.signed_line(r))
        if r["comment"]:
            st.text(r["comment"])

st.subheader("Findings report")
c = st.columns(2)
c[0].download_button(
    "Download Markdown",
    ac.report(path, rid, "md", policy),
    file_name=f"flagcore-run-{rid}.md",
    mime="text/markdown",
)
c[1].download_button(
    "Download HTML",
    ac.report(path, rid, "html", policy),
    file_name=f"flagcore-run-{rid}.html",
    mime="text/html",
)
