// A run's page (/runs/:run, /runs/:run/layers/:layer): its head, why it has no results yet,
// then its panels (RunPanels, TrainingPanel, UnitsPanel). A share link opens it read-only.
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useToken } from "../../api/auth";
import { download, isLive } from "../../api/client";
import type { RunDetailFull } from "../../api/contract";
import { useRun } from "../../api/queries";
import { CopyButton } from "../../components/CopyButton";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { PageHead } from "../../components/PageHead";
import { ErrorBox, Loading, NotFound, SelectedIsInit, StatusBadge, When } from "../../components/States";
import { runLayers } from "../../lib/chain";
import { attackLabel, DASH, usesScoreNorm } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { layerPath, runPath, unitPath, useRunHref, useShareParam } from "../../lib/share";
import { usePageTitle } from "../../lib/title";
import { AccuracyPanel, attackOf, layerInfo, PerUnitPanel, PushUp, SummaryPanel, type PushupData } from "./RunPanels";
import { FvTargetPanel } from "./FvTarget";
import { ShareDialog } from "./ShareDialog";
import { SyntheticSummary } from "./SyntheticSummary";
import { TrainingPanel } from "./TrainingPanel";
import { UnitsPanel } from "./UnitsPanel";

export function RunSummary() {
  const params = useParams();
  const runId = Number(params.run);
  const run = useRun(runId);
  const share = useShareParam();
  const layers = run.data ? runLayers(run.data) : [];
  const noSuchLayer = params.layer != null && layers.length > 0 && !layers.includes(params.layer);
  usePageTitle(
    run.data
      ? noSuchLayer
        ? `Layer ${params.layer} not found · Run ${run.data.id}: ${run.data.name}`
        : `Run ${run.data.id}: ${run.data.name}${params.layer ? ` · ${params.layer}` : ""}`
      : `Run ${params.run}`,
  );
  if (!(runId > 0)) return <ErrorBox error={new Error("No such run: the address must be /runs/<number>.")} />;
  if (run.isLoading) return <Loading what={`Loading run ${runId}`} />;
  if (run.error) {
    const status = (run.error as { status?: number }).status;
    if (share && status === 404)
      return (
        <ErrorBox
          title="This share link does not work"
          error={new Error("The link was revoked by its owner, or it is mistyped. Ask the owner for a new link.")}
        />
      );
    return <ErrorBox error={run.error} retry={() => run.refetch()} />;
  }
  if (noSuchLayer) return <LayerNotFound runId={runId} runName={run.data!.name} layer={params.layer!} layers={layers} />;
  return <RunBody run={run.data!} layerParam={params.layer} />;
}

/** The run's embedder warning (the embedder its CLIP measures and scores used is not the one asked for, or a stand-in), if any. */
export function EmbedderWarning({ run }: { run: Pick<RunDetailFull, "embedder_warning"> | undefined }) {
  if (!run?.embedder_warning) return null;
  return (
    <div className="banner warn" role="note" data-testid="embedder-warning">
      <strong>Embedder:</strong> {run.embedder_warning}
    </div>
  );
}

/** `/runs/1/layers/relu2` when run 1 has no relu2: not another layer's results in its place. */
export function LayerNotFound({ runId, runName, layer, layers }: { runId: number; runName: string; layer: string; layers: string[] }) {
  const href = useRunHref();
  return (
    <NotFound title={`Run ${runId} has no layer ${layer}`}>
      <p>
        <Link to={href(runPath(runId))}>{runName}</Link> measured {layers.length === 1 ? "one layer" : `${layers.length} layers`}:{" "}
        {layers.map((l, i) => (
          <span key={l}>
            {i > 0 && ", "}
            <Link className="mono" to={href(layerPath(runId, l))}>
              {l}
            </Link>
          </span>
        ))}
        .
      </p>
    </NotFound>
  );
}

function RunBody({ run, layerParam }: { run: RunDetailFull; layerParam?: string }) {
  const navigate = useNavigate();
  const href = useRunHref();
  const token = useToken();
  const layers = runLayers(run);
  const layer = layerParam && layers.includes(layerParam) ? layerParam : layers[0];
  const attack = attackOf(run);
  const readOnly = run.read_only || !token;
  const outcome = attackOutcome(run);
  const hasResults = (run.rows ?? []).length > 0 || run.table.length > 0;
  // the final state of one unit, for "offer the final state" (the first attacked one of the layer)
  const firstAttacked = [...(layerInfo(run, layer).attacked ?? [])].sort((x, y) => x - y)[0];
  const finalUnitHref = layer && firstAttacked != null ? href(`${unitPath(run.id, layer, firstAttacked)}?state=final`) : null;

  return (
    <div className="page run">
      <RunHead run={run} layers={layers} layer={layer} readOnly={readOnly} />
      {run.status !== "succeeded" && <RunStatus run={run} readOnly={readOnly} hasResults={hasResults} />}
      <SelectedIsInit outcome={outcome}>
        {hasResults && <>The final state is the <strong>final</strong> row of the summary{finalUnitHref ? <>; per unit, each unit page's “final state” tab (<Link to={finalUnitHref}>unit {firstAttacked}, final state</Link>)</> : null}.</>}
      </SelectedIsInit>
      <EmbedderWarning run={run} />
      <SummaryPanel run={run} layers={layers} layer={layer} />
      {layer && (
        <ErrorBoundary name="Feature visualization vs target" resetKey={layer}>
          <FvTargetPanel run={run} layer={layer} />
        </ErrorBoundary>
      )}
      <AccuracyPanel run={run} />
      {run.pushup && (
        <ErrorBoundary name="Push-up success">
          <PushUp pushup={run.pushup as PushupData} kClip={run.k_clip} kGallery={typeof attack.k === "number" ? attack.k : null} />
        </ErrorBoundary>
      )}
      {layer && <PerUnitPanel run={run} layer={layer} />}
      {run.synthetic && Object.keys(run.synthetic).length > 0 && (
        <ErrorBoundary name="Synthetic visualizations" resetKey={layer}>
          <SyntheticSummary synthetic={run.synthetic} layers={layers} current={layer} kClip={run.k_clip} attackKind={attack.kind as string | undefined} onPickUnit={(l, u) => navigate(href(unitPath(run.id, l, u)))} />
        </ErrorBoundary>
      )}
      <TrainingPanel run={run} />
      {layer && <UnitsPanel run={run} layers={layers} layer={layer} readOnly={readOnly} />}
    </div>
  );
}

/** The run's head: what it is (model, attack, settings, its control), and share, compare and export. */
function RunHead({ run, layers, layer, readOnly }: { run: RunDetailFull; layers: string[]; layer: string | undefined; readOnly: boolean }) {
  const href = useRunHref();
  const [shareOpen, setShareOpen] = useState(false);
  const [dlError, setDlError] = useState<unknown>(null);
  const attack = attackOf(run);
  return (
    <>
      <PageHead
        title={
          <>
            {run.name} <StatusBadge status={run.status} />
            {readOnly && <span className="badge readonly">read-only</span>}
          </>
        }
        crumbs={readOnly ? undefined : <><Link to="/">Runs</Link> / run {run.id}</>}
        actions={
          <div className="actions">
            {!readOnly && (
              <button type="button" className="primary" onClick={() => setShareOpen(true)}>
                Share…
              </button>
            )}
            <CopyButton text={() => window.location.href} label="Copy link" />
            {!readOnly && (
              <Link className="button" to={`/compare?a=${run.id}&layer=${encodeURIComponent(layer ?? "")}`}>
                Compare…
              </Link>
            )}
            <button
              type="button"
              onClick={() => download(`/api/v1/runs/${run.id}/export.csv`, `run-${run.id}.csv`).catch(setDlError)}
              title="One CSV row per unit: metrics and top-k ids before/after"
            >
              CSV
            </button>
            <button type="button" onClick={() => download(`/api/v1/runs/${run.id}/export.json`, `run-${run.id}.json`).catch(setDlError)}>
              JSON
            </button>
          </div>
        }
      >
        {run.model_id != null ? <Link to={`/models/${run.model_id}`}>{run.model ?? `model ${run.model_id}`}</Link> : (run.model ?? "model ?")} · {attackLabel(run.attack?.kind as string)} on <span className="mono">{layers.join(", ")}</span>
        {attack.units ? ` · units ${(attack.units as number[]).length <= 8 ? (attack.units as number[]).join(", ") : `${(attack.units as number[]).length} chosen`}` : " · all units"}
        {attack.steps != null && ` · ${attack.steps} steps`}
        {attack.lr != null && ` · lr ${attack.lr}`}
        {" · α "}
        {attack.kind === "finetune" ? "0" : attack.alpha == null ? "dynamic" : String(attack.alpha)}
        {attack.score_norm && usesScoreNorm(attack.kind as string) ? ` · ${attack.score_norm}` : ""}
        {` · k ${attack.k ?? DASH}, k_clip ${run.k_clip}`}
        {" · "}
        <When iso={run.created_at} />
        {run.control_run_id != null && (
          <>
            {" · "}
            <Link to={href(runPath(run.control_run_id))}>α = 0 control: run {run.control_run_id}</Link>
          </>
        )}
      </PageHead>
      {dlError != null && <ErrorBox error={dlError} title="Export failed" />}
      {shareOpen && <ShareDialog runId={run.id} runName={run.name} onClose={() => setShareOpen(false)} />}
    </>
  );
}

/** Why a run shows no (or partial) results: failed, cancelled, or still running, with its job. */
function RunStatus({ run, readOnly, hasResults }: { run: RunDetailFull; readOnly: boolean; hasResults: boolean }) {
  return (
    <div className={`banner${run.status === "failed" ? " error" : ""}`} role="status">
      {run.status === "failed" ? (
        <>
          This run failed: <span className="mono">{run.error ?? "no message"}</span>.{" "}
        </>
      ) : run.status === "cancelled" ? (
        hasResults ? (
          "This run was cancelled; the results it measured before are shown below. "
        ) : (
          <>
            This run was cancelled before it measured any results{run.error ? ` (${run.error})` : ""}: there is nothing to show.{" "}
          </>
        )
      ) : (
        "This run is still in progress; the results appear when it is done. "
      )}
      {run.job_id && !readOnly && <Link to={`/jobs/${run.job_id}`}>Open the job{isLive(run) ? " (live progress)" : ""}</Link>}
    </div>
  );
}
