import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { BrowserRouter, Link, Route, Routes } from "react-router";
import { usePageTitle } from "../lib/title";
import { DetectionList } from "../features/detections/DetectionList";
import { DetectionPage } from "../features/detections/DetectionPage";
import { DetectionUnitPage } from "../features/detections/DetectionUnit";
import { ImageSets } from "../features/image-sets/ImageSets";
import { Jobs } from "../features/jobs/Jobs";
import { JobView } from "../features/jobs/JobView";
import { LaunchPage } from "../features/launch/Launch";
import { ModelPage, ModelUnitPage } from "../features/models/ModelPage";
import { Models } from "../features/models/Models";
import { Register } from "../features/register/Register";
import { Compare } from "../features/runs/Compare";
import { Home } from "../features/runs/Home";
import { SearchPage } from "../features/search/Search";
import { RunSummary } from "../features/runs/RunSummary";
import { UnitPage } from "../features/runs/UnitPage";
import { SweepList, SweepPage } from "../features/sweeps/Sweep";
import { SweepLaunch } from "../features/sweeps/SweepLaunch";
import { Layout } from "./Layout";
import { RequireToken } from "./RequireToken";

export function makeQueryClient() {
  return new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: 10_000,
        refetchOnWindowFocus: false,
        retry: (n, e) => {
          const s = (e as { status?: number }).status;
          return !(s && s >= 400 && s < 500) && n < 2;
        },
      },
    },
  });
}

export function AppRoutes() {
  return (
    <Routes>
      <Route element={<Layout />}>
        <Route element={<RequireToken />}>
          <Route index element={<Home />} />
          <Route path="launch" element={<LaunchPage />} />
          <Route path="register" element={<Register />} />
          <Route path="jobs" element={<Jobs />} />
          <Route path="jobs/:job" element={<JobView />} />
          <Route path="compare" element={<Compare />} />
          <Route path="sweeps" element={<SweepList />} />
          <Route path="sweeps/new" element={<SweepLaunch />} />
          <Route path="sweeps/:sweep" element={<SweepPage />} />
          <Route path="detections" element={<DetectionList />} />
          <Route path="detections/:detection" element={<DetectionPage />} />
          <Route path="detections/:detection/layers/:layer/units/:unit" element={<DetectionUnitPage />} />
          <Route path="models" element={<Models />} />
          <Route path="image-sets" element={<ImageSets />} />
          <Route path="models/:model" element={<ModelPage />} />
          <Route path="models/:model/layers/:layer/units/:unit" element={<ModelUnitPage />} />
          <Route path="search" element={<SearchPage />} />
        </Route>
        <Route element={<RequireToken orShare />}>
          <Route path="runs/:run" element={<RunSummary />} />
          <Route path="runs/:run/layers/:layer" element={<RunSummary />} />
          <Route path="runs/:run/layers/:layer/units/:unit" element={<UnitPage />} />
        </Route>
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}

function NotFound() {
  usePageTitle("No such page");
  return (
    <section className="panel">
      <h1>No such page</h1>
      <p>
        Addresses look like <code>/runs/3</code>, <code>/runs/3/layers/relu3/units/7</code>, <code>/jobs/12</code> or{" "}
        <code>/models/1</code>; the lists are at <Link to="/models">/models</Link>, <Link to="/image-sets">/image-sets</Link> and{" "}
        <Link to="/jobs">/jobs</Link>.{" "}
        <Link to="/">Go to the runs</Link>.
      </p>
    </section>
  );
}

export function App({ client = makeQueryClient() }: { client?: QueryClient }) {
  return (
    <QueryClientProvider client={client}>
      <BrowserRouter>
        <AppRoutes />
      </BrowserRouter>
    </QueryClientProvider>
  );
}
